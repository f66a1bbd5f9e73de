"""bench/promtext.py: sums of samples from a real exposition."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from promtext import sample_sum, sums


def exposition() -> str:
    registry = CollectorRegistry()
    dead = Counter("dl", "dead letters", ["reason", "topic"], registry=registry)
    dead.labels("late", "a").inc(2)
    dead.labels("late", "b").inc(3)
    dead.labels("schema", "a").inc(5)
    Gauge("lag", "lag", ["topic"], registry=registry).labels("a").set(7)
    return generate_latest(registry).decode()


def test_a_counter_sums_its_total_samples_by_label_filter_not_its_created_ones() -> None:
    text = exposition()
    assert "dl_created" in text  # the sample the sums must leave out
    assert sample_sum(text, "dl_total") == 10
    assert sample_sum(text, "dl_total", {"reason": "late"}) == 5
    assert sample_sum(text, "dl_total", {"reason": "late", "topic": "b"}) == 3
    assert sample_sum(text, "lag", {"topic": "a"}) == 7
    assert sample_sum(text, "absent") == 0


def test_sums_gives_every_name_asked_and_a_total_per_label_value() -> None:
    got = sums(exposition(), ["dl_total", "lag", "absent"], by="reason")
    assert got == {"dl_total": 10, "lag": 7, "absent": 0, "dl_total:late": 5, "dl_total:schema": 5}
