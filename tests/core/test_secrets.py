"""No default secrets: the worker refuses to start while a secret is unset, short or a
placeholder, names each and what sets it, never its value; secrets come from variables
or from the files ``<VARIABLE>_FILE`` names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import cli
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.secrets import FILE_SUFFIX, PLACEHOLDERS, UnsafeSecrets, weakness
from streams.core.settings import Settings
from streams.notify.routing import secret_variables

REPO = Path(__file__).resolve().parents[2]
SECRETS = [
    "CITYVITALS_DEID_KEY",
    "CITYVITALS_ACTION_KEY",
    *secret_variables(DEFAULT_CONFIG_DIR / "routes.yaml"),
]
UNFIT = {
    "unset": "",
    "short": "31-bytes-of-a-secret-0123456789",
    "placeholder": "demo-secret-change-me-0123456789-0123456789",
    "old-default": "cityvitals-demo-key-change-me",
}
ALL_SECRETS = [
    *SECRETS,
    "CITYVITALS_DEADLETTER_KEY",
    "CITYVITALS_ACTION_KEY_PREVIOUS",
    "CITYVITALS_SASL_PASSWORD",
]


def fit(name: str) -> str:
    return f"{name.lower()}-a-secret-of-our-own-0123456789"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's environment without the session's generated secrets."""
    for name in ALL_SECRETS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name + FILE_SUFFIX, raising=False)
    return monkeypatch


def worker(*args: str) -> tuple[int, str]:
    # a port nothing listens on: the refusal comes before any broker is needed
    result = CliRunner().invoke(cli, ["worker", "--bootstrap", "127.0.0.1:9", *args])
    return result.exit_code, result.output


def test_unset_short_and_placeholder_values_are_unfit() -> None:
    assert weakness(None) == weakness("") == "is not set"
    assert weakness("x" * 31) == "is 31 bytes, shorter than 32"
    assert weakness("é" * 16) is None  # bytes, not characters
    for mark in PLACEHOLDERS:
        assert weakness(f"{mark.upper()}-{'x' * 40}") == "is a known placeholder"
    assert weakness("x" * 32) is None


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("kind", list(UNFIT))
def test_the_worker_refuses_to_start_naming_the_unfit_secret_and_its_variable(
    clean_env: pytest.MonkeyPatch, secret: str, kind: str
) -> None:
    for name in SECRETS:
        clean_env.setenv(name, UNFIT[kind] if name == secret else fit(name))
    code, out = worker()
    assert code == 2, out
    assert "unsafe secrets" in out and "(1;" in out
    assert f"{secret} or {secret}{FILE_SUFFIX}" in out
    if UNFIT[kind]:
        assert UNFIT[kind] not in out
    for name in SECRETS:
        assert fit(name) not in out


def test_every_problem_is_named_at_once(clean_env: pytest.MonkeyPatch) -> None:
    code, out = worker()
    assert code == 2
    assert f"({len(SECRETS)};" in out
    for name in SECRETS:
        assert f"{name} or {name}{FILE_SUFFIX}" in out


def test_a_dead_letter_key_of_its_own_must_be_fit_too(clean_env: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        clean_env.setenv(name, fit(name))
    assert Settings().secret_problems() == []  # unset: derived from the deid key
    clean_env.setenv("CITYVITALS_DEADLETTER_KEY", "change-me")
    code, out = worker()
    assert code == 2
    assert "the dead-letter sealing key is a known placeholder" in out
    assert "CITYVITALS_DEADLETTER_KEY or CITYVITALS_DEADLETTER_KEY_FILE" in out


def test_previous_action_keys_are_optional_but_each_must_be_fit(
    clean_env: pytest.MonkeyPatch,
) -> None:
    for name in SECRETS:
        clean_env.setenv(name, fit(name))
    current = fit("CITYVITALS_ACTION_KEY").encode()
    assert Settings().action_keys() == (current, [])
    clean_env.setenv("CITYVITALS_ACTION_KEY_PREVIOUS", f" {fit('old')} ,{fit('older')},")
    assert Settings().secret_problems() == []
    assert Settings().action_keys() == (current, [fit("old").encode(), fit("older").encode()])
    for unfit, why in (
        ("short-key", "is 9 bytes, shorter than 32"),
        (UNFIT["placeholder"], "is a known placeholder"),
    ):
        clean_env.setenv("CITYVITALS_ACTION_KEY_PREVIOUS", f"{fit('old')},{unfit}")
        code, out = worker()
        assert code == 2, out
        assert "the previous action signing keys include one that" in out
        assert why in out
        assert "CITYVITALS_ACTION_KEY_PREVIOUS or CITYVITALS_ACTION_KEY_PREVIOUS_FILE" in out
        assert unfit not in out and fit("old") not in out
    clean_env.setenv("CITYVITALS_ACTION_KEY_PREVIOUS", "")  # compose's empty default: none
    assert Settings().secret_problems() == [] and Settings().action_keys()[1] == []


def test_an_action_key_holding_the_example_secret_s_placeholder_is_refused(
    clean_env: pytest.MonkeyPatch,
) -> None:
    for name in SECRETS:
        clean_env.setenv(name, fit(name))
    clean_env.setenv("CITYVITALS_ACTION_KEY", "REPLACE-WITH-A-RANDOM-SECRET")
    problems = [str(p) for p in Settings().secret_problems()]
    assert problems == [
        "the action signing key is a known placeholder; set it with "
        "CITYVITALS_ACTION_KEY or CITYVITALS_ACTION_KEY_FILE"
    ]
    with pytest.raises(ValueError, match="CITYVITALS_ACTION_KEY or CITYVITALS_ACTION_KEY_FILE"):
        clean_env.delenv("CITYVITALS_ACTION_KEY")
        Settings().action_keys()


def test_check_config_reports_the_same_problems(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CITYVITALS_NOTIFY_SECRET_FIRE", UNFIT["placeholder"])
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 2
    assert "CITYVITALS_DEID_KEY or CITYVITALS_DEID_KEY_FILE" in result.output
    assert "the signing secret of receiver fire-duty-dingtalk is a known placeholder" in (
        result.output
    )
    assert UNFIT["placeholder"] not in result.output


def test_the_worker_process_exits_2_without_secrets(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not any(k in (n, n + FILE_SUFFIX) for n in ALL_SECRETS)
    }
    env["CITYVITALS_BOOTSTRAP"] = "127.0.0.1:9"
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "CITYVITALS_DEID_KEY or CITYVITALS_DEID_KEY_FILE" in proc.stderr
    assert "CITYVITALS_RESPONDER_KEY or CITYVITALS_RESPONDER_KEY_FILE" in proc.stderr
    assert "the action signing key is not set; set it with CITYVITALS_ACTION_KEY or" in (
        " ".join(proc.stderr.split())
    )


def test_every_secret_may_come_from_a_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [*SECRETS, "CITYVITALS_DEADLETTER_KEY", "CITYVITALS_SASL_PASSWORD"]:
        path = tmp_path / name.lower()
        path.write_text(fit(name) + "\n", encoding="utf-8")  # as `echo` leaves it
        clean_env.setenv(name + FILE_SUFFIX, str(path))
    previous = tmp_path / "action-key-previous"  # one key a line
    previous.write_text(f"{fit('old')}\n{fit('older')}\n", encoding="utf-8")
    clean_env.setenv("CITYVITALS_ACTION_KEY_PREVIOUS_FILE", str(previous))
    settings = Settings(security_protocol="SASL_SSL")
    assert settings.secret_problems() == []
    assert settings.deid_secret() == fit("CITYVITALS_DEID_KEY").encode()
    assert settings.action_keys() == (
        fit("CITYVITALS_ACTION_KEY").encode(),
        [fit("old").encode(), fit("older").encode()],
    )
    assert settings.deadletter_key is not None
    assert settings.deadletter_key.get_secret_value() == fit("CITYVITALS_DEADLETTER_KEY")
    options = settings.kafka_client_options()
    assert options["sasl_plain_password"] == fit("CITYVITALS_SASL_PASSWORD")
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 0, result.output


def test_a_secret_file_that_cannot_be_read_or_a_secret_set_twice_is_named(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("CITYVITALS_DEID_KEY_FILE", str(tmp_path / "missing"))
    clean_env.setenv("CITYVITALS_ACTION_KEY", fit("CITYVITALS_ACTION_KEY"))
    clean_env.setenv("CITYVITALS_DEADLETTER_KEY", fit("dead"))
    clean_env.setenv("CITYVITALS_DEADLETTER_KEY_FILE", str(tmp_path / "missing"))
    problems = [str(p) for p in Settings().secret_problems()]
    assert problems == [
        "the de-identification key cannot be read (CITYVITALS_DEID_KEY_FILE: cannot read "
        f"{tmp_path / 'missing'}: No such file or directory); set it with "
        "CITYVITALS_DEID_KEY or CITYVITALS_DEID_KEY_FILE",
        "the dead-letter sealing key is set twice (CITYVITALS_DEADLETTER_KEY and "
        "CITYVITALS_DEADLETTER_KEY_FILE); set it with one of them",
    ]
    assert fit("dead") not in " ".join(problems)


def test_create_app_refuses_unfit_secrets_too(clean_env: pytest.MonkeyPatch) -> None:
    from streams.kafka.worker import create_app

    for name in SECRETS:
        clean_env.setenv(name, fit(name))
    clean_env.setenv("CITYVITALS_RESPONDER_KEY", "too-short")
    with pytest.raises(UnsafeSecrets, match="responder-link signing key is 9 bytes") as caught:
        create_app(Settings(app_id="cv-unsafe-secrets"), load_config())
    assert "too-short" not in str(caught.value)
