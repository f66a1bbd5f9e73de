"""The package layout's rules: imports run downwards, and Kafka stays in streams/kafka/.

``docs/architecture.md`` draws the map; this test holds the code to it. A subpackage of
``streams`` may import only the subpackages listed for it below (and itself), so that
each concern can be read, tested and replaced from the bottom up; ``streams/cli.py``, at
the top, may import any. faust, aiokafka, kafka-python and mode are imported only in
``streams/kafka/``: everything else is plain Python a newcomer can run without a broker.
"""

from __future__ import annotations

import ast
import math
import pickle
from pathlib import Path

import pytest

from legacy.pickled_state import MOVED, detection_from_pickle, notify_from_pickle
from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.rules import load_thresholds
from streams.core.config import load_config
from streams.notify.planner import DistrictNotify
from streams.state.windows import DistrictWindows

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ROOT / "streams"

#: Which subpackages each subpackage may import (besides itself), lowest first.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "ingest": frozenset({"core"}),
    "state": frozenset({"core"}),
    "voice": frozenset({"core", "ingest"}),
    "alerting": frozenset({"core", "ingest", "state"}),
    "notify": frozenset({"core", "alerting"}),
    "api": frozenset({"core", "alerting", "notify"}),
    "kafka": frozenset({"core", "ingest", "state", "voice", "alerting", "notify", "api"}),
    "sim": frozenset({"core", "voice", "alerting", "api", "kafka"}),
}
KAFKA_LIBRARIES = frozenset({"faust", "aiokafka", "kafka", "mode"})


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (at any depth: inside functions too), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "streams":  # from streams import core
                found += [(node.lineno, f"streams.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def modules() -> list[Path]:
    return sorted(STREAMS.rglob("*.py"))


def package_of(path: Path) -> str | None:
    """The subpackage ``path`` belongs to; None for the modules at the top (the CLI)."""
    parts = path.relative_to(STREAMS).parts
    return parts[0] if len(parts) > 1 else None


def test_every_subpackage_has_rules_and_says_what_it_holds() -> None:
    subpackages = {p.name for p in STREAMS.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(MAY_IMPORT)
    for name in subpackages:
        doc = ast.get_docstring(ast.parse((STREAMS / name / "__init__.py").read_text("utf-8")))
        assert doc, f"streams/{name}/__init__.py says nothing of what the package holds"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downwards_and_kafka_stays_in_its_package(path: Path) -> None:
    package = package_of(path)
    wrong = []
    for line, name in imports(path):
        top, _, rest = name.partition(".")
        if top in KAFKA_LIBRARIES and package != "kafka":
            wrong.append(f"line {line}: imports {name}, which only streams/kafka/ may")
        if top == "streams" and package is not None:
            target = rest.partition(".")[0]
            if target != package and target not in MAY_IMPORT[package]:
                wrong.append(f"line {line}: streams/{package}/ may not import streams.{target}")
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_the_rules_see_a_wrong_import(tmp_path: Path) -> None:
    """The checks are not vacuous: an upward import and a stray Kafka import are found."""
    module = tmp_path / "m.py"
    module.write_text("import aiokafka\n\ndef f():\n    from streams.kafka import worker\n")
    assert imports(module) == [(1, "aiokafka"), (4, "streams.kafka")]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "detectors").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_models_import_nothing_of_the_product(path: Path) -> None:
    """detectors/ is a library of river models and rules: usable without streams/."""
    wrong = [
        f"line {line}: {name}"
        for line, name in imports(path)
        if name.split(".")[0] in {"streams", *KAFKA_LIBRARIES}
    ]
    assert not wrong, f"{path.relative_to(ROOT)} imports " + ", ".join(wrong)


@pytest.mark.parametrize(
    "path",
    sorted([*STREAMS.rglob("*.py"), *(ROOT / "detectors").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_the_worker_runs_imports_pickle(path: Path) -> None:
    """Table state is versioned documents (streams/core/state.py); reading what earlier
    releases pickled is legacy/'s alone, for ``cityvitals migrate-state``."""
    found = [(line, name) for line, name in imports(path) if name.partition(".")[0] in PICKLERS]
    assert not found, f"{path.relative_to(ROOT)} imports {found}"


PICKLERS = frozenset({"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal"})


def test_state_pickled_under_the_old_module_names_migrates() -> None:
    """Detection and notification state pickled by earlier releases names its classes by
    module: a value written before the packages by concern still converts (``cityvitals
    migrate-state``), with every class found where it now lives."""

    cfg = load_config()
    ctx = DetectionContext(cfg, load_thresholds(cfg))
    detection = DistrictDetection("339901")
    windows = DistrictWindows("339901", window_s=60, rolling_windows=15)
    t0 = 1_795_000_000 - 1_795_000_000 % 60
    for i in range(300):
        windows.add("iot.noise_db", 50 + 5 * math.sin(i / 20), t0 + 30 * i, "iot")
        for window in windows.close_due(120.0, ["iot"]):
            detection.on_window(window, ctx)
    back = {new: old for old, new in MOVED.items()}
    for value, cls, convert in (
        (detection, DistrictDetection, detection_from_pickle),
        (DistrictNotify("339901"), DistrictNotify, notify_from_pickle),
    ):
        # protocol 2 names each class as "module\nname\n": put back the old module names
        data = pickle.dumps(value, protocol=2)
        for new, old in back.items():
            data = data.replace(f"c{new}\n".encode(), f"c{old}\n".encode())
        assert f"c{back[cls.__module__]}\n".encode() in data  # the old name, not the new
        restored = convert(data)
        assert restored.dumps() == value.dumps()


#: The most lines a function, and a class, may take without saying why.
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 80, 300
#: How a long function or class says why: a comment with these words, just above its
#: ``def`` or ``class`` or among its first lines, followed by the reason.
LONG_ON_PURPOSE = "long on purpose"


def oversized(path: Path) -> list[str]:
    """The functions and classes of ``path`` over their limit that do not say why."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        assert node.end_lineno is not None
        size = node.end_lineno - node.lineno + 1
        if size <= limit:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        near = "\n".join(lines[max(0, first - 4) : node.body[0].lineno + 6]).lower()
        if LONG_ON_PURPOSE not in near:
            found.append(f"{node.name} (line {node.lineno}, {size} lines, limit {limit})")
    return found


@pytest.mark.parametrize(
    "path",
    sorted([*STREAMS.rglob("*.py"), *(ROOT / "detectors").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_long_function_or_class_without_a_reason(path: Path) -> None:
    """A function over 80 lines or a class over 300 is split, or says why it is not."""
    assert not oversized(path), f"{path.relative_to(ROOT)}: " + "; ".join(oversized(path))


def test_the_size_rule_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long = tmp_path / "long.py"
    long.write_text(f"def f():\n{body}\n")
    assert oversized(long) == [f"f (line 1, {MAX_FUNCTION_LINES + 1} lines, limit 80)"]
    long.write_text(f"def f():\n    # Long on purpose: one table.\n{body}\n")
    assert oversized(long) == []
