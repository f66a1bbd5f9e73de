"""Composite weak-signal correlation: faint signals across domains in one place."""

from __future__ import annotations

import pickle

from detectors.composite import MAX_SIGNALS, Correlator, WeakSignal

STREET = "339901001"


def sig(
    at: float, domain: str, indicator: str, street: str | None = STREET, score: float = 0.4
) -> WeakSignal:
    return WeakSignal(at, domain, indicator, street, score, f"{indicator} unusual")


def test_three_domains_in_one_street_within_the_window_fire_one_composite() -> None:
    c = Correlator(window_s=900, min_domains=3)
    c.add(sig(0, "fire", "fire.smoke_alarms"))
    c.add(sig(100, "fire", "fire.hydrant_pressure_kpa"))  # the same domain: still two
    c.add(sig(200, "traffic", "traffic.speed_kmh"))
    assert c.evaluate(200) is None
    c.add(sig(300, "citizen", "hotline.complaints", score=0.6))
    out = c.evaluate(300)
    assert out is not None and out.kind == "fire" and out.grade == 4 and out.street == STREET
    assert [m.indicator for m in out.members] == [
        "hotline.complaints",
        "fire.hydrant_pressure_kpa",
        "fire.smoke_alarms",
        "traffic.speed_kmh",
    ]
    assert c.evaluate(360) is None  # nothing new


def test_signals_too_far_apart_do_not_correlate() -> None:
    c = Correlator(window_s=900, min_domains=3)
    c.add(sig(0, "fire", "fire.smoke_alarms"))
    c.add(sig(600, "traffic", "traffic.speed_kmh"))
    c.add(sig(1000, "citizen", "hotline.complaints"))  # the first is 1000 s old by now
    assert c.evaluate(1000) is None


def test_different_streets_do_not_add_up_but_district_signals_count_in_each() -> None:
    c = Correlator(window_s=900, min_domains=3)
    c.add(sig(0, "fire", "fire.smoke_alarms", street="339901001"))
    c.add(sig(10, "traffic", "traffic.speed_kmh", street="339901002"))
    c.add(sig(20, "citizen", "hotline.complaints", street=None))
    out = c.evaluate(20)
    # no street has three domains: the district as a whole does
    assert out is not None and out.street is None and len(out.members) == 3
    d = Correlator(window_s=900, min_domains=3)
    d.add(sig(0, "fire", "fire.smoke_alarms", street="339901001"))
    d.add(sig(10, "traffic", "traffic.speed_kmh", street="339901001"))
    d.add(sig(20, "citizen", "hotline.complaints", street=None))
    out = d.evaluate(20)
    assert out is not None and out.street == "339901001"


def test_more_domains_raise_the_grade_and_fading_signals_resolve_after_hold() -> None:
    c = Correlator(window_s=900, min_domains=3, hold_s=600)
    for i, (domain, ind) in enumerate(
        [("fire", "a"), ("traffic", "b"), ("citizen", "c"), ("utilities", "d")]
    ):
        c.add(sig(60 * i, domain, ind))
    changes = [c.evaluate(60 * i) for i in range(4)]
    assert [(x.kind, x.grade) for x in changes if x is not None] == [("fire", 4), ("update", 3)]
    assert c.evaluate(1000) is None  # signals aged out: the hold starts
    out = c.evaluate(1600)
    assert out is not None and out.kind == "resolve" and out.grade == 3


def test_state_is_bounded_and_pickles() -> None:
    c = Correlator()
    for i in range(10_000):
        c.add(sig(float(i), "fire", "fire.smoke_alarms"))
    assert len(c.signals) == MAX_SIGNALS
    copy = pickle.loads(pickle.dumps(c))
    assert copy.evaluate(10_000) == c.evaluate(10_000)
