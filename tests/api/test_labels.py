"""The console names grades and alert kinds with the product's one table of labels."""

from __future__ import annotations

import json
import re

import pytest

from streams.api.app import CONSOLE_DIR
from streams.api.labels import LABELS_PATH
from streams.core.messages import GRADE_COLOURS, GRADE_COLOURS_ZH, KIND_EN, KIND_ZH, Grade
from tests.api.test_api import client, stored


def served_labels() -> dict[str, dict[str, dict[str, str]]]:
    api, _ = client(stored())
    answer = api.get(LABELS_PATH)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    _, _, rest = answer.text.partition("export const LABELS = ")
    assert rest, answer.text
    return json.loads(rest.rstrip().removesuffix(";"))


def test_the_console_labels_are_the_tables_in_both_languages() -> None:
    labels = served_labels()
    assert labels["grades"] == {
        str(g.value): {"roman": g.roman, "zh": GRADE_COLOURS_ZH[g], "en": GRADE_COLOURS[g]}
        for g in Grade
    }
    assert labels["kinds"] == {k.value: {"zh": KIND_ZH[k], "en": KIND_EN[k]} for k in KIND_EN}


@pytest.mark.parametrize("page", ["i18n.js", "respond.js", "app.js"])
def test_no_console_file_names_a_grade_colour_or_a_kind_of_its_own(page: str) -> None:
    text = (CONSOLE_DIR / page).read_text(encoding="utf-8")
    colours = [*GRADE_COLOURS_ZH.values(), *(f'"{c}' for c in GRADE_COLOURS.values())]
    assert not [c for c in colours if c in text]
    assert not re.findall(r'"(?:grade\.\d|kind\.\w+)":', text)
    # nor lists the grades' numerals or the kinds itself
    assert not re.findall(r'"(?:I|II|III|IV)"', text)
    kind = "|".join(k.value for k in KIND_EN)
    assert not re.findall(rf'"(?:{kind})"\s*,\s*"(?:{kind})"', text)


def test_the_labels_are_not_in_the_openapi_document() -> None:
    api, _ = client(stored())
    assert LABELS_PATH not in api.get("/openapi.json").json()["paths"]
