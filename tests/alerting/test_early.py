"""Early decisions: an alarm on the reading, and the same alert events whatever the timing.

The worker judges a crossing reading when its batch ends, while earlier windows
of the district may still be open; replay judges it row by row; the fault
verifier's oracle keeps every reading and judges it only as windows close. All
three must raise the same alert events (streams.alerting.early), and a restart from any
written state must raise nothing new.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.thresholds import Aggregate, Direction, ThresholdDetector, ThresholdSpec
from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.early import Partials, partials
from streams.alerting.rules import load_thresholds
from streams.core.config import load_config
from streams.core.messages import AlertEvent, AlertStatus, Grade
from streams.core.settings import Settings
from streams.state.windows import DistrictWindows

CFG = load_config()
ROOT = Path(__file__).resolve().parents[2]
DISTRICT, STREET = "339901", "339901001"
TEMP = "fire.temperature_c"
SMOKE = "fire.smoke_alarms"  # counted: judged by fire.smoke_alarms.sum5, street-scoped
T0 = 1_795_000_000.0 - 1_795_000_000.0 % 60
LATENESS = 120.0


def _context(tmp: Path) -> DetectionContext:
    """The shipped rules, plus rules on each temperature reading with and without pending."""
    doc = yaml.safe_load((ROOT / "config" / "thresholds.yaml").read_text(encoding="utf-8"))
    doc["rules"] += [
        {
            "id": "fire.temperature.reading",
            "department": "fire",
            "indicator": TEMP,
            "aggregate": "reading",
            "direction": "above",
            "grades": {"III": 60, "II": 90, "I": 150},
            "pending": 0,
            "hold": "2m",
            "hysteresis": 5,
        },
        {
            "id": "fire.temperature.sustained",
            "department": "fire",
            "indicator": TEMP,
            "aggregate": "reading",
            "direction": "above",
            "grades": {"II": 80, "I": 140},
            "pending": "45s",
            "hold": "1m",
        },
    ]
    path = tmp / "thresholds.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return DetectionContext(CFG, load_thresholds(CFG, path), anomaly=None, forecast_horizon_s=0)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> DetectionContext:
    return _context(tmp_path_factory.mktemp("rules"))


# one input record: (source, event time, value); "fire" carries the temperature, "smoke"
# a smoke alarm (on the fire topic too), "iot" the noise meter
Arrival = tuple[str, float, float]


def count(
    windows: DistrictWindows, ctx: DetectionContext, source: str, t: float, value: float
) -> tuple[str, Partials | None] | None:
    """Count one arrival in the windows; for a reading early rules watch, its indicator and
    the running totals taken as it was counted (as the pipeline takes them)."""
    if source == "iot":
        assert windows.add("iot.noise_db", value, t, source)
        return None
    indicator = TEMP if source == "fire" else SMOKE
    counted = windows.add(indicator, value, t, "fire", f"{indicator}@{STREET}")
    assert counted, "the generated stream has no late reading"
    totals = None
    if indicator in ctx.running_indicators:
        totals = partials(windows.open, ctx.partial_keys(indicator, STREET))
    return indicator, totals


@dataclass
class Run:
    """A district as the worker runs it: windows, detection, and the events raised."""

    ctx: DetectionContext
    windows: DistrictWindows = field(
        default_factory=lambda: DistrictWindows(DISTRICT, window_s=60, rolling_windows=15)
    )
    detection: DistrictDetection = field(default_factory=lambda: DistrictDetection(DISTRICT))
    events: list[AlertEvent] = field(default_factory=list)
    n: int = 0

    def batch(self, arrivals: list[Arrival]) -> None:
        """One batch: count, judge the early readings, close what is due (as the pipeline)."""
        early: list[tuple[str, float, float, str, Partials | None]] = []
        for source, t, value in arrivals:
            self.n += 1
            counted = count(self.windows, self.ctx, source, t, value)
            if counted is not None:
                early.append((counted[0], t, value, f"in:{self.n}", counted[1]))
        for indicator, t, value, ref, totals in early:
            self.events += self.detection.on_reading(
                indicator, STREET, t, value, ref, self.ctx, self.windows.open, 60.0, totals
            )
        self._closed(self.windows.close_due(LATENESS, ["fire", "iot"]))

    def finish(self) -> None:
        self._closed(self.windows.close_all())

    def _closed(self, closed: list[Any]) -> None:
        for window in closed:
            self.events += self.detection.on_window(window, self.ctx)
        if closed:
            self.events += self.detection.catch_up(self.windows.open, 60.0, self.ctx)


def as_json(events: list[AlertEvent]) -> dict[tuple[str, int], Any]:
    """Events by (alert id, sequence); the same identity twice must be the same event."""
    out: dict[tuple[str, int], Any] = {}
    for e in events:
        doc = orjson.loads(e.to_json())
        key = (e.alert_id, e.sequence)
        assert out.setdefault(key, doc) == doc, f"{key} raised twice with different contents"
    return out


def oracle(ctx: DetectionContext, arrivals: list[Arrival]) -> dict[tuple[str, int], Any]:
    """The canonical order: every reading kept, judged only as its window closes."""
    windows = DistrictWindows(DISTRICT, window_s=60, rolling_windows=15)
    detection = DistrictDetection(DISTRICT)
    for n, (source, t, value) in enumerate(arrivals, 1):
        counted = count(windows, ctx, source, t, value)
        if counted is not None:
            indicator, totals = counted
            detection.on_reading(indicator, STREET, t, value, f"in:{n}", ctx, None, 60.0, totals)
    events = []
    for window in windows.close_all():
        events += detection.on_window(window, ctx)
    return as_json(events)


LEVELS = st.sampled_from([25.0, 40.0, 58.0, 62.0, 75.0, 95.0, 120.0, 145.0, 160.0, 320.0])


@st.composite
def streams_(draw: st.DrawFn) -> list[Arrival]:
    """Twenty minutes of a fire sensor (a reading every 5-20 s, at changing levels, some
    delayed by up to 90 s) and a noise meter whose clock lags the fire feed's by up to
    100 s, interleaved as a broker would hand them over."""
    fire: list[tuple[float, float, float]] = []  # (arrival time, event time, value)
    t, level = T0, 25.0
    while t < T0 + 1200:
        if draw(st.integers(0, 9)) == 0:
            level = draw(LEVELS)
        delay = draw(st.sampled_from([0.0] * 8 + [30.0, 90.0]))
        fire.append((t + delay, t, level + draw(st.floats(-3, 3))))
        t += draw(st.integers(5, 20))
    # smoke alarms of the same street, in bursts, on the fire topic: delayed with it
    smoke: list[tuple[float, float, float]] = []
    t = T0 + draw(st.integers(0, 60))
    while t < T0 + 1200:
        delay = draw(st.sampled_from([0.0] * 8 + [30.0, 90.0]))
        smoke.append((t + delay, t, 1.0))
        t += draw(st.sampled_from([300, 120, 40, 10, 5, 2]))
    lag = draw(st.integers(0, 100))
    noise = [(t + lag, t, 50.0) for t in range(int(T0), int(T0) + 1200, 15)]
    merged = sorted(
        [(a, "fire", et, v) for a, et, v in fire]
        + [(a, "smoke", et, v) for a, et, v in smoke]
        + [(a, "iot", et, v) for a, et, v in noise]
    )
    return [(src, et, v) for _, src, et, v in merged]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(arrivals=streams_(), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=80))
def test_the_same_alert_events_however_batches_and_window_closes_fall(
    ctx: DetectionContext, arrivals: list[Arrival], cuts: list[int]
) -> None:
    expected = oracle(ctx, arrivals)
    for sizes in ([1], cuts):  # reading by reading, then batches of random sizes
        run, i, k = Run(ctx), 0, 0
        while i < len(arrivals):
            size = sizes[k % len(sizes)]
            run.batch(arrivals[i : i + size])
            i, k = i + size, k + 1
        run.finish()
        assert as_json(run.events) == expected


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(arrivals=streams_(), size=st.integers(1, 30), crash=st.integers(0, 200))
def test_a_restart_from_written_state_raises_nothing_new(
    ctx: DetectionContext, arrivals: list[Arrival], size: int, crash: int
) -> None:
    """A worker killed after writing detection but before the windows: the batch is read
    again into the windows it last wrote, against the newer detection (the worker
    writes detection first); then it goes on. Every event is one of the undisturbed
    run's, and none of them is missing."""
    batches = [arrivals[i : i + size] for i in range(0, len(arrivals), size)]
    crash %= len(batches)
    calm = Run(ctx)
    for b in batches:
        calm.batch(b)
    calm.finish()
    expected = as_json(calm.events)

    run = Run(ctx)
    for b in batches[:crash]:
        run.batch(b)
    windows = DistrictWindows.from_dict(orjson.loads(orjson.dumps(run.windows.to_dict())))
    n = run.n
    run.batch(batches[crash])  # its events are published, the detection written ...
    run.windows, run.n = windows, n  # ... and the windows are not: read again
    run.detection = DistrictDetection.loads(run.detection.dumps())
    for b in batches[crash:]:
        run.batch(b)
    run.finish()
    assert as_json(run.events) == expected


def test_a_fire_reading_raises_grade_i_at_once_while_earlier_windows_are_open(
    ctx: DetectionContext,
) -> None:
    run = Run(ctx)
    run.batch([("iot", T0 + s, 50.0) for s in range(0, 170, 15)])
    run.batch([("fire", T0 + s, 30.0) for s in range(0, 170, 10)])
    assert sorted(run.windows.open) == [T0, T0 + 60, T0 + 120]  # none closed yet
    run.batch([("fire", T0 + 175.0, 320.0)])
    fired = {e.evidence.rule: e for e in run.events}
    assert set(fired) == {"fire.temperature.reading", "fire.temperature.max"}
    for rule, event in fired.items():
        assert event.status is AlertStatus.FIRING and event.grade is Grade.I, rule
        assert event.event_time.timestamp() == T0 + 175.0
        assert event.evidence.decided == "reading" and event.evidence.reading is not None
        assert event.evidence.reading.value == 320.0
        assert event.evidence.reading.time.timestamp() == T0 + 175.0
        assert event.evidence.observed == 320.0 and event.evidence.threshold == 150.0
    assert fired["fire.temperature.max"].street == STREET
    assert fired["fire.temperature.reading"].street is None
    # the windows close later: nothing is raised twice; the rule with a pending time
    # fires once its 45 s have passed since the first crossing reading, on a reading
    n = len(run.events)
    run.batch([("iot", T0 + s, 50.0) for s in range(180, 600, 15)])
    run.batch([("fire", T0 + s, 320.0) for s in range(180, 600, 10)])
    assert [
        (e.evidence.rule, e.status, e.grade, e.event_time.timestamp(), e.evidence.decided)
        for e in run.events[n:]
    ] == [("fire.temperature.sustained", AlertStatus.FIRING, Grade.I, T0 + 220.0, "reading")]


def test_a_pending_rule_fires_on_the_reading_that_completes_its_pending_time(
    ctx: DetectionContext,
) -> None:
    run = Run(ctx)
    run.batch([("iot", T0 + s, 50.0) for s in range(0, 300, 15)])
    run.batch([("fire", T0 + s, 100.0) for s in range(0, 50, 10)])  # 0..40 s: pending
    assert [e for e in run.events if e.evidence.rule == "fire.temperature.sustained"] == []
    run.batch([("fire", T0 + 50.0, 100.0)])  # 50 s after the first crossing reading
    (sustained,) = [e for e in run.events if e.evidence.rule == "fire.temperature.sustained"]
    assert sustained.grade is Grade.II and sustained.event_time.timestamp() == T0 + 50.0
    assert sustained.evidence.decided == "reading"


def test_a_dip_in_an_earlier_open_window_defers_the_escalation_to_its_close(
    ctx: DetectionContext,
) -> None:
    """Grade II on the reading, then a minute that falls to grade III is still open when a
    grade I reading arrives: that minute's close de-escalates first, so the escalation
    waits for it and then comes out with the reading's own time."""
    arrivals: list[list[Arrival]] = [
        [("iot", T0 + s, 50.0) for s in range(0, 60, 15)],
        [("fire", T0 + s, 95.0) for s in range(0, 60, 10)],  # minute 0: II
        [("fire", T0 + 60 + s, 70.0) for s in range(0, 60, 10)],  # minute 1: III
        [("fire", T0 + 125.0, 160.0)],  # minute 2: I
    ]
    run = Run(ctx)
    for b in arrivals:
        run.batch(b)
    rule = [e for e in run.events if e.evidence.rule == "fire.temperature.reading"]
    assert [(e.status, e.grade) for e in rule] == [(AlertStatus.FIRING, Grade.II)]
    later = [("iot", T0 + s, 50.0) for s in range(60, 300, 15)]
    later += [("fire", T0 + s, 160.0) for s in range(130, 300, 10)]
    run.batch(later)  # minutes 0 and 1 close
    rule = [e for e in run.events if e.evidence.rule == "fire.temperature.reading"]
    assert [(e.status, e.grade, e.event_time.timestamp()) for e in rule] == [
        (AlertStatus.FIRING, Grade.II, T0),
        (AlertStatus.UPDATED, Grade.III, T0 + 120),  # minute 1 closed: down
        (AlertStatus.UPDATED, Grade.I, T0 + 125),  # then the reading: up
    ]
    assert rule[-1].evidence.decided == "reading"
    run.finish()
    assert as_json(run.events) == oracle(ctx, [a for b in [*arrivals, later] for a in b])


def test_a_late_reading_that_brings_a_clearing_alert_back_lower_is_heard_first(
    ctx: DetectionContext,
) -> None:
    """Smoke alarms put the street at grade III, then the five-minute sum falls to 0 and the
    alert clears in its 15-minute hold. Minute 9 then sums to 5 alarms (grade II) while
    minute 8 is still open, and a delayed alarm of minute 8 arrives after them: with it,
    minute 8's close brings the alert back at grade IV (a de-escalation) before minute
    9's readings, so the escalation may not be raised ahead of that close."""
    m = 60.0
    smoke = [(T0 + s, T0 + s) for s in (10.0, 20.0, 30.0)]  # (arrival, event time)
    smoke += [(T0 + 7 * m + 50, T0 + 7 * m + 50)]
    smoke += [(T0 + 9 * m + s, T0 + 9 * m + s) for s in (10.0, 20.0, 30.0, 40.0)]
    smoke += [(T0 + 10 * m, T0 + 8 * m + 30)]  # 90 s late
    noise = [(T0 + s + 100, T0 + s) for s in range(0, 900, 15)]  # its clock lags 100 s
    merged = sorted([(a, "smoke", t) for a, t in smoke] + [(a, "iot", t) for a, t in noise])
    arrivals: list[Arrival] = [(src, t, 50.0 if src == "iot" else 1.0) for _, src, t in merged]
    run = Run(ctx)
    for a in arrivals:
        run.batch([a])
    run.finish()
    rule = [e for e in run.events if e.evidence.rule == "fire.smoke_alarms.sum5"]
    assert [(e.grade, e.event_time.timestamp() - T0, e.evidence.decided) for e in rule[:5]] == [
        (Grade.IV, 20.0, "reading"),
        (Grade.III, 30.0, "reading"),
        (Grade.IV, 9 * m, "window"),  # minute 8 closed with the late alarm: sum 2
        (Grade.III, 9 * m + 20, "reading"),
        (Grade.II, 9 * m + 40, "reading"),
    ]
    assert [e.sequence for e in rule[:5]] == [1, 2, 3, 4, 5]
    assert as_json(run.events) == oracle(ctx, arrivals)


def test_a_window_only_lowers_an_early_rule() -> None:
    spec = ThresholdSpec(
        "t", TEMP, Aggregate.MAX, 120, Direction.ABOVE, (None, 60, 90, 150), hysteresis=5
    )
    det = ThresholdDetector(spec)
    # a closed window past grade I with no reading judged early: nothing starts
    assert det.update_window(T0, T0 + 60, 3, 600.0, 100.0, 200.0, settle=True) == []
    assert det.phase == "inactive"
    (fire,) = det.early(T0 + 70, 100.0, T0 + 70)
    assert (fire.kind, fire.grade, fire.decided) == ("fire", 2, "reading")
    # the close of a worse window does not escalate; only a reading does
    assert det.update_window(T0 + 60, T0 + 120, 2, 300.0, 100.0, 200.0, settle=True) == []
    assert det.grade == 2
    (up,) = det.early(T0 + 130, 200.0, T0 + 130)
    assert (up.kind, up.grade) == ("update", 1)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(arrivals=streams_())
def test_deciding_on_the_reading_reaches_the_grades_the_closed_windows_reach(
    ctx: DetectionContext, arrivals: list[Arrival]
) -> None:
    """Judged on the reading, a rule with no pending time reaches, at its worst, the grade
    that judging only whole closed windows reaches (a window total judged as each
    reading leaves it misses no crossing), and never a worse one."""
    at_close = dataclasses.replace(ctx, early=False)
    worst: list[dict[str, int]] = []
    for c in (ctx, at_close):
        windows = DistrictWindows(DISTRICT, window_s=60, rolling_windows=15)
        detection = DistrictDetection(DISTRICT)
        for n, (source, t, value) in enumerate(arrivals, 1):
            counted = count(windows, c, source, t, value)
            if counted is not None and c.early:
                indicator, totals = counted
                detection.on_reading(indicator, STREET, t, value, f"in:{n}", c, None, 60.0, totals)
        events = [e for w in windows.close_all() for e in detection.on_window(w, c)]
        grades: dict[str, int] = {}
        for e in events:
            rule = e.evidence.rule
            if rule in (
                "fire.temperature.max",
                "fire.smoke_alarms.sum5",
                "fire.temperature.reading",
            ):
                grades[rule] = min(grades.get(rule, 9), e.grade.value)
        worst.append(grades)
    assert worst[0] == worst[1]


def test_only_a_reading_past_a_bound_writes_the_district_detection_state() -> None:
    """Most readings are far from every bound: the worker's batch then writes no detection
    state (one write per district and batch would cost throughput and recovery time)."""
    from streams.kafka.tables import DETECTION_TABLE
    from tests.kafka.test_source_wait import Feed

    feed = Feed(Settings(partitions=4))
    table = feed.processor.writer.changelogs[1]
    assert DETECTION_TABLE in table

    def temperature(seconds: float, celsius: float) -> list[str]:
        """The topics the batch of one fire-sensor reading wrote to."""
        before = len(feed.sent)
        feed.send("fire", seconds, indicator=TEMP, value=celsius, unit="°C")
        return [topic for topic, _, _ in feed.sent[before:]]

    for s in range(0, 60, 10):
        temperature(s, 24.0)
    calm = temperature(60, 25.0)
    assert "city.readings" in calm and table not in calm  # counted, nothing judged
    written = temperature(70, 320.0)  # grade I on the reading
    assert table in written and "city.emergency-command" in written


def test_the_batch_keeps_only_readings_that_may_be_past_an_early_bound(
    ctx: DetectionContext,
) -> None:
    """The batch loop offers detection only the readings that may cross: a value past the
    mildest bound of a rule on the reading, max or min, and every reading a running count
    or sum judges (its total, not its value, decides)."""
    # temperature: III at 60 degC on the reading and on the window maximum, eased by the
    # hysteresis of 5 degC (a reading in the band continues an alert in its hold time)
    assert not ctx.may_cross(TEMP, DISTRICT, STREET, 54.9)
    assert ctx.may_cross(TEMP, DISTRICT, STREET, 55.0)
    assert ctx.may_cross(TEMP, DISTRICT, None, 61.0)
    # water pressure: a burst main is one reading at or below 120 kPa, watched from below
    # with a hysteresis of 10 kPa
    assert ctx.may_cross("iot.water_pressure_kpa", DISTRICT, STREET, 130.0)
    assert not ctx.may_cross("iot.water_pressure_kpa", DISTRICT, STREET, 130.5)
    # smoke alarms are summed over five minutes: even a 0 is kept for its running total
    assert ctx.may_cross(SMOKE, DISTRICT, STREET, 0.0)
    # an indicator no early rule watches (a mean) is never offered
    assert not ctx.may_cross("iot.pm25", DISTRICT, None, 900.0)


def test_the_latency_metric_counts_from_the_deciding_reading_by_rule_class(
    ctx: DetectionContext,
) -> None:
    from streams.core import metrics
    from streams.kafka.raising import count_alert_event, rule_class_of

    run = Run(ctx)
    run.batch([("iot", T0 + s, 50.0) for s in range(0, 120, 15)])
    run.batch([("fire", T0 + 100.0, 320.0)])
    fired = {e.evidence.rule: e for e in run.events}
    assert rule_class_of(fired["fire.temperature.reading"]) == ("reading", T0 + 100.0)
    assert rule_class_of(fired["fire.temperature.max"]) == ("monotone", T0 + 100.0)
    # the fire out: the rule on each reading resolves when a window closes past its hold
    run.batch([("iot", T0 + s, 50.0) for s in range(120, 600, 15)])
    run.batch([("fire", T0 + s, 24.0) for s in range(120, 600, 10)])
    (done,) = [e for e in run.events if e.status is AlertStatus.RESOLVED][:1]
    assert rule_class_of(done) == ("window", done.event_time.timestamp())

    def observed(rule_class: str) -> float:
        name = "cityvitals_alerts_event_to_alert_seconds_count"
        labels = {"kind": "alarm", "rule_class": rule_class}
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = observed("monotone")
    count_alert_event(fired["fire.temperature.max"])
    assert observed("monotone") == before + 1
