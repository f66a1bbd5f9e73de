"""The grade and kind labels of the console, as a JavaScript module built from the one table.

Every text the product writes names grades and alert kinds with the words of
:mod:`streams.core.messages` (``GRADE_COLOURS``, ``GRADE_COLOURS_ZH``, ``KIND_ZH``,
``KIND_EN``). The console's pages import those words from ``/console/labels.js``,
which this module renders from that table, so the browser shows what a
notification, a CAP message or a headline says, in both languages.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from streams.core.messages import (
    GRADE_COLOURS,
    GRADE_COLOURS_ZH,
    KIND_EN,
    KIND_ZH,
    AlertKind,
    Grade,
)

#: Where the console's pages import the labels from.
LABELS_PATH = "/console/labels.js"


def labels() -> dict[str, Any]:
    """Each grade's Roman numeral and colour, and each alert kind's name, in zh and en."""
    return {
        "grades": {
            str(grade.value): {
                "roman": grade.roman,
                "zh": GRADE_COLOURS_ZH[grade],
                "en": GRADE_COLOURS[grade],
            }
            for grade in Grade
        },
        "kinds": {kind.value: {"zh": KIND_ZH[kind], "en": KIND_EN[kind]} for kind in AlertKind},
    }


@cache
def labels_module() -> str:
    """The labels as an ES module: ``export const LABELS = {...};``."""
    doc = json.dumps(labels(), ensure_ascii=False, indent=2)
    source = "// The product's grade and kind labels, from streams/core/messages.py.\n"
    return f"{source}export const LABELS = {doc};\n"
