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
