"""The documentation's worked examples run against the real code and print what the docs say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_vital_index_worked_example_prints_exactly_the_documented_output() -> None:
    text = (DOCS / "vital-index.md").read_text(encoding="utf-8")
    (script,) = re.findall(r"```python\n(.*?)```", text, re.S)
    documented = re.search(r"Output:\n\n```\n(.*?)```", text, re.S)
    assert documented is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(script, "docs/vital-index.md", "exec"), {"__name__": "docs_example"})
    assert out.getvalue() == documented.group(1)


ROOT = DOCS.parent


def _layout_tree() -> dict[str, str]:
    """The README's project layout: each path it lists, with its one-line description."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = readme.split("## Project layout", 1)[1].split("```")[1]
    listed: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    for line in tree.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name, _, description = line.strip().partition(" ")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = "".join(p for _, p in parents) + name
        listed[path] = description.strip()
        if name.endswith("/"):
            parents.append((indent, name))
    return listed


def _modules() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT))
        for package in ("streams", "detectors")
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    )


def test_the_readme_layout_names_every_module_where_it_is_with_what_it_holds() -> None:
    """A newcomer finds every module in the README's tree, under its package, with one
    line on what it holds; and nothing the tree names is missing."""
    listed = _layout_tree()
    unlisted = [m for m in _modules() if not listed.get(m)]
    assert not unlisted, f"modules missing from the README's project layout: {unlisted}"
    gone = [
        p for p in listed if p.startswith(("streams/", "detectors/")) and not (ROOT / p).exists()
    ]
    assert not gone, f"the README's project layout names what does not exist: {gone}"


def test_the_architecture_describes_every_module() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    undescribed = [m for m in _modules() if m not in text]
    assert not undescribed, f"modules docs/architecture.md does not describe: {undescribed}"


def test_the_readme_names_every_topic_the_worker_creates() -> None:
    from streams.kafka.tables import DETECTION_TABLE, NOTIFY_TABLE, TABLE_NAME
    from streams.kafka.topics import CITY_TOPICS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    topics = readme.split("- **Topics.**", 1)[1].split("\n- **", 1)[0]
    missing = [
        t for t in CITY_TOPICS if f"`{t}`" not in topics and not t.startswith("city.events.")
    ]
    missing += [
        t for t in (TABLE_NAME, DETECTION_TABLE, NOTIFY_TABLE) if f"-{t}-changelog`" not in topics
    ]
    assert "`city.events.*`" in topics and not missing, missing
