"""The characters a regular expression's match can start with, read from its parsed form.

For patterns that start with a lookahead on a set of characters (``(?=[...])(?:...)``),
so that sre scans for that set in C: the tests check that the set holds every character
any alternative can start with, so the lookahead never turns away a match.
"""

from __future__ import annotations

import re
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

_ZERO_WIDTH = {c.ASSERT, c.ASSERT_NOT, c.AT}
_REPEATS = {c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT}


def _chars(items: Any) -> set[int]:
    out: set[int] = set()
    for op, av in items:
        if op is c.LITERAL:
            out.add(av)
        elif op is c.RANGE:
            out.update(range(av[0], av[1] + 1))
        else:
            raise ValueError(f"no first characters for set item {op}")
    return out


def _first(items: Any) -> tuple[set[int], bool]:
    """(the characters a match of ``items`` can start with, whether it can be empty)."""
    out: set[int] = set()
    for op, av in items:
        if op is c.LITERAL:
            return out | {av}, False
        if op is c.IN:
            return out | _chars(av), False
        if op in _ZERO_WIDTH:
            continue
        if op is c.SUBPATTERN:
            first, empty = _first(av[-1])
        elif op is c.BRANCH:
            results = [_first(branch) for branch in av[1]]
            first = set().union(*(f for f, _ in results))
            empty = any(e for _, e in results)
        elif op in _REPEATS:
            low, _, sub = av
            first, empty = _first(sub)
            empty = empty or low == 0
        else:
            raise ValueError(f"no first characters for {op}")
        out |= first
        if not empty:
            return out, False
    return out, True


def first_chars(pattern: str) -> set[str]:
    """Every character a match of ``pattern`` can start with (never an empty match)."""
    first, empty = _first(_parser.parse(pattern))
    if empty:
        raise ValueError("the pattern can match the empty string")
    return set(map(chr, first))


def lookahead_chars(pattern: re.Pattern[str]) -> tuple[set[str], str]:
    """The set of a pattern of the form ``(?=[SET])(?:REST)``, and REST."""
    lookahead = re.match(r"\(\?=(\[[^\]]*\])\)\(\?:", pattern.pattern)
    if lookahead is None or not pattern.pattern.endswith(")"):
        raise ValueError("not a pattern that starts with a lookahead on a set")
    rest = pattern.pattern[lookahead.end() : -1]
    return first_chars(lookahead.group(1)), rest
