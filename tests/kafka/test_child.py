"""The shared launcher gives the demo, the benches and the tests fresh random secrets,
so the worker needs no demo mode to start without secrets of its own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.secrets import FILE_SUFFIX, from_variable, weakness
from streams.kafka.child import generated_secrets, needed_secrets, worker_environment
from streams.notify.routing import load_routes, secret_variables

SECRETS = [
    "CITYVITALS_DEID_KEY",
    "CITYVITALS_ACTION_KEY",
    *secret_variables(DEFAULT_CONFIG_DIR / "routes.yaml"),
]


def values(env: dict[str, str]) -> dict[str, str | None]:
    return {name: from_variable(name, env).value for name in SECRETS}


def test_generated_secrets_are_fresh_private_and_fit(tmp_path: Path) -> None:
    first = generated_secrets(tmp_path / "one", SECRETS)
    second = generated_secrets(tmp_path / "two", SECRETS)
    assert set(first) == {name + FILE_SUFFIX for name in SECRETS}
    one, two = values(first), values(second)
    assert all(weakness(v) is None for v in [*one.values(), *two.values()])
    assert not set(one.values()) & set(two.values())  # two runs, two sets of secrets
    assert len(set(one.values())) == len(SECRETS)  # one secret per use
    for path in first.values():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert values(generated_secrets(tmp_path / "one", SECRETS)) == one  # a restart keeps them


def test_worker_environment_supplies_the_secrets_the_environment_lacks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name + FILE_SUFFIX, raising=False)
    env = worker_environment("127.0.0.1:9092", "cv-a", 6066, tmp_path / "a")
    assert needed_secrets(env) == []
    assert {Path(env[n + FILE_SUFFIX]).parent for n in SECRETS} == {tmp_path / "a" / "secrets"}
    other = worker_environment("127.0.0.1:9092", "cv-b", 6066, tmp_path / "b")
    assert not set(values(env).values()) & set(values(other).values())
    # what the worker will read passes its own checks
    routes = load_routes(DEFAULT_CONFIG_DIR / "routes.yaml", load_config(), environ=env)
    assert routes.secret_problems == () and routes.responder_links is not None
    # a secret the environment gives is used as it is
    monkeypatch.setenv("CITYVITALS_DEID_KEY", "k" * 40)
    env = worker_environment(
        "127.0.0.1:9092", "cv-c", 6066, tmp_path / "c", secrets_dir=tmp_path / "shared"
    )
    assert env["CITYVITALS_DEID_KEY"] == "k" * 40 and "CITYVITALS_DEID_KEY_FILE" not in env
    assert Path(env["CITYVITALS_RESPONDER_KEY_FILE"]).parent == tmp_path / "shared"


def test_a_custom_routes_file_gets_the_secrets_it_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nreceivers:\n  - {name: a, url: 'http://127.0.0.1:9/a', format: native,"
        " secret_env: CV_TEST_RECEIVER_SECRET}\n",
        encoding="utf-8",
    )
    for name in ("CV_TEST_RECEIVER_SECRET", "CITYVITALS_RESPONDER_KEY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name + FILE_SUFFIX, raising=False)
    env = worker_environment(
        "127.0.0.1:9092", "cv-d", 6066, tmp_path / "d", routes_file=str(routes)
    )
    assert "CV_TEST_RECEIVER_SECRET_FILE" in env
    assert "CITYVITALS_RESPONDER_KEY_FILE" not in env  # this routes file has no links
