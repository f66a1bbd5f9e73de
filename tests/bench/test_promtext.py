"""bench/promtext.py: sums of samples from a real exposition."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from promtext import sample_sum, sums

# a worker's page as prometheus_client writes it, with a counter's _created samples
# (the product turns them off; another exporter may not)
EXPOSITION = """\
# HELP dl_total dead letters
# TYPE dl_total counter
dl_total{reason="late",topic="a"} 2.0
dl_total{reason="late",topic="b"} 3.0
dl_total{reason="schema",topic="a"} 5.0
dl_created{reason="late",topic="a"} 1.7649e+09
dl_created{reason="late",topic="b"} 1.7649e+09
dl_created{reason="schema",topic="a"} 1.7649e+09
# HELP lag lag
# TYPE lag gauge
lag{topic="a"} 7.0
"""


def exposition() -> str:
    return EXPOSITION


def test_a_counter_sums_its_total_samples_by_label_filter_not_its_created_ones() -> None:
    text = exposition()
    assert sample_sum(text, "dl_total") == 10
    assert sample_sum(text, "dl_total", {"reason": "late"}) == 5
    assert sample_sum(text, "dl_total", {"reason": "late", "topic": "b"}) == 3
    assert sample_sum(text, "lag", {"topic": "a"}) == 7
    assert sample_sum(text, "absent") == 0


def test_sums_gives_every_name_asked_and_a_total_per_label_value() -> None:
    got = sums(exposition(), ["dl_total", "lag", "absent"], by="reason")
    assert got == {"dl_total": 10, "lag": 7, "absent": 0, "dl_total:late": 5, "dl_total:schema": 5}
