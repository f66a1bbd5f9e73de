"""Detection per district over closed minutes: street rules, data quality, idempotence."""

from __future__ import annotations

from streams.alerting.detection import SILENCE_RULE, DetectionContext, DistrictDetection
from streams.alerting.rules import load_thresholds
from streams.core.config import load_config
from streams.core.messages import AlertKind, AlertStatus, Grade
from streams.state.windows import ClosedWindow

CFG = load_config()
CTX = DetectionContext(CFG, load_thresholds(CFG))
T0 = 1_795_000_000.0 - 1_795_000_000.0 % 60


def minute(i: int, **values: float) -> ClosedWindow:
    """Minute ``i`` with one reading per given indicator (``iot_pm25`` means ``iot.pm25``)."""
    start = T0 + 60 * i
    aggs = {k.replace("_", ".", 1): [1, v, v, v] for k, v in values.items()}
    return ClosedWindow("339901", start, start + 60, aggs, aggs)


def test_a_gauge_gone_quiet_raises_data_quality_to_its_owner_and_clears_on_return() -> None:
    det = DistrictDetection("339901")
    events = []
    for i in range(10):
        events += det.on_window(minute(i, iot_pm25=30, iot_noise_db=50), CTX)
    assert events == []
    for i in range(10, 14):  # PM2.5 silent; noise keeps the district's clock going
        events += det.on_window(minute(i, iot_noise_db=50), CTX)
    (dq,) = events
    assert dq.kind is AlertKind.DATA_QUALITY and dq.status is AlertStatus.FIRING
    assert dq.department == "environment" and dq.indicators == ["iot.pm25"]
    assert dq.grade is Grade.IV and dq.evidence.rule == SILENCE_RULE
    assert dq.event_time.timestamp() == T0 + 60 * 14  # silent > 3 x 60 s after 09:59
    (back,) = det.on_window(minute(14, iot_pm25=31, iot_noise_db=50), CTX)
    assert back.status is AlertStatus.RESOLVED and back.alert_id == dq.alert_id


def test_street_scoped_rules_alert_on_the_street() -> None:
    det = DistrictDetection("339901")
    window = minute(0, fire_smoke_alarms=3)
    window.minute["fire.smoke_alarms@339901002"] = [3, 3.0, 1.0, 1.0]
    for n in range(3):  # the alarms as they were counted, then the minute's close
        totals = {
            "fire.smoke_alarms": ((T0, n + 1.0, n + 1.0),),
            "fire.smoke_alarms@339901002": ((T0, n + 1.0, n + 1.0),),
        }
        at = T0 + 10 * n
        early = det.on_reading(
            "fire.smoke_alarms", "339901002", at, 1.0, f"in:{n}", CTX, {}, 60.0, totals
        )
        # two alarms in five minutes: grade IV on the second, III on the third
        assert [(e.grade, e.evidence.decided) for e in early] == (
            [] if n == 0 else [(Grade.IV if n == 1 else Grade.III, "reading")]
        )
    assert det.on_window(window, CTX) == []  # the close confirms it: nothing new
    alert = det.book.open[next(iter(det.book.open))]
    assert alert.street == "339901002" and alert.evidence.rule == "fire.smoke_alarms.sum5"
    assert alert.grade is Grade.III and alert.department == "fire"  # 3 alarms in 5 min
    assert alert.headline_en.startswith("Jiangbin / Wangchao:")


def test_a_minute_closed_again_after_a_crash_is_not_fed_twice() -> None:
    det = DistrictDetection("339901")
    first = det.on_window(minute(0, iot_pm25=400), CTX)
    again = det.on_window(minute(0, iot_pm25=400), CTX)
    assert again == [] and det.fed_until == T0 + 60
    assert first == []  # pending: 5 minutes before the PM2.5 rule fires


def test_state_round_trips_through_the_table_codec() -> None:
    det = DistrictDetection("339901")
    for i in range(30):
        det.on_window(minute(i, iot_pm25=200.0 + i, traffic_speed_kmh=40), CTX)
    copy = DistrictDetection.loads(det.dumps())
    nxt = [minute(i, iot_pm25=20) for i in range(30, 60)]
    assert [e for w in nxt for e in det.on_window(w, CTX)] == [
        e for w in nxt for e in copy.on_window(w, CTX)
    ]
    assert len(det.dumps()) < 64 * 1024


def test_weak_signals_in_three_domains_of_a_street_make_one_composite_alert() -> None:
    """A smoke-alarm blip, slow traffic and a few more calls: none an alarm, together one."""
    det = DistrictDetection("339901")
    window = minute(0, traffic_speed_kmh=20, hotline_complaints=12)
    window.minute["fire.smoke_alarms"] = [1, 1.0, 1.0, 1.0]
    window.minute["fire.smoke_alarms@339901002"] = [1, 1.0, 1.0, 1.0]
    events = det.on_window(window, CTX)
    (composite,) = [e for e in events if e.kind is AlertKind.COMPOSITE]
    assert all(e.kind is AlertKind.COMPOSITE for e in events)  # nothing else alerted
    assert composite.status is AlertStatus.FIRING and composite.grade is Grade.IV
    assert composite.street == "339901002" and composite.department == "command_centre"
    members = {(m.domain, m.indicator, m.street) for m in composite.evidence.members}
    assert members == {
        ("fire", "fire.smoke_alarms", "339901002"),
        ("traffic", "traffic.speed_kmh", None),
        ("citizen", "hotline.complaints", None),
    }
    assert set(composite.co_departments) == {"fire", "traffic", "hotline_office"}


def test_a_configured_maintenance_window_marks_matching_alerts_silenced() -> None:
    from streams.alerting.lifecycle import Silence

    works = Silence("works-1", T0, T0 + 3600, district="339901", domain="fire")
    # every rule judged as its window closes, as with early decisions off
    ctx = DetectionContext(CFG, CTX.rules, silences=(works,), early=False)
    det = DistrictDetection("339901")
    window = minute(0)
    window.minute["fire.smoke_alarms@339901002"] = [3, 3.0, 1.0, 1.0]
    (alert,) = det.on_window(window, ctx)
    assert alert.silenced_by == "works-1"


def test_an_alert_shows_the_last_minutes_of_its_series_as_evidence() -> None:
    det = DistrictDetection("339901")
    events = []
    for i in range(30):
        events += det.on_window(minute(i, iot_pm25=100.0 + i), CTX)
    alarm = next(e for e in events if e.kind is AlertKind.ALARM)
    fired_in = round((alarm.event_time.timestamp() - T0) / 60) - 1  # the minute that fired it
    expected = [100.0 + j for j in range(fired_in + 1)][-15:]
    assert [v.value for v in alarm.evidence.values] == expected
    assert alarm.evidence.values[-1].time == alarm.event_time
