"""Detection and notification state as versioned documents: what the worker writes to
its changelogs restores exactly, for every model a city can configure, and state written
by this release restores in the next.

``tests/fixtures/state/`` keeps table values written by this release, with a summary of
what they hold. They are never rewritten by the tests: a later release must restore them
(after a field is added, with the field's default). Write them again only when a state
version changes, with ``python -m tests.alerting.test_detection_state`` from the
repository root, and keep the older files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from detectors.anomaly import AnomalyGate
from detectors.calibrated import Calibrated
from detectors.site import SiteModel
from streams.alerting.detection import (
    DETECTION_STATE,
    DETECTION_STATE_VERSION,
    DetectionContext,
    DistrictDetection,
)
from streams.alerting.models import RIVER_DETECTORS
from streams.alerting.rules import load_thresholds
from streams.core.config import load_config
from streams.core.state import StateCodec
from streams.notify.planner import NOTIFY_STATE, NOTIFY_STATE_VERSION, DistrictNotify
from streams.state.windows import ClosedWindow
from tests.notify.test_notify import alert, routes, storm

CFG = load_config()
CTX = DetectionContext(CFG, load_thresholds(CFG))
T0 = 1_795_000_000.0 - 1_795_000_000.0 % 60
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state"
DETECTION_FIXTURE = FIXTURES / f"district-detection-v{DETECTION_STATE_VERSION}.bin"
NOTIFY_FIXTURE = FIXTURES / f"notify-groups-v{NOTIFY_STATE_VERSION}.bin"


def minute(i: int, **values: float) -> ClosedWindow:
    start = T0 + 60 * i
    aggs = {k.replace("_", ".", 1): [1, v, v, v] for k, v in values.items()}
    return ClosedWindow("339901", start, start + 60, aggs, aggs)


def day(n: int, incident_at: int) -> list[ClosedWindow]:
    """``n`` minutes of a district: daily cycles, noise, and a PM2.5 and noise incident."""
    rng = random.Random(5)
    out = []
    for i in range(n):
        cycle = math.sin(2 * math.pi * i / 1440)
        bad = incident_at <= i < incident_at + 40
        out.append(
            minute(
                i,
                iot_pm25=(260.0 if bad else 35.0 + 10 * cycle) + rng.gauss(0, 2),
                iot_noise_db=(95.0 if bad else 55.0 + 5 * cycle) + rng.gauss(0, 1),
                traffic_speed_kmh=40.0 + 8 * cycle + rng.gauss(0, 2),
                iot_water_pressure_kpa=300.0 + rng.gauss(0, 3),
            )
        )
    return out


def detection_scenario() -> DistrictDetection:
    det = DistrictDetection("339901")
    for window in day(720, incident_at=700):  # ends with the incident open
        det.on_window(window, CTX)
    return det


def routing_tree() -> Any:
    return routes(Path(tempfile.mkdtemp(prefix="routes-")))


def notify_scenario() -> DistrictNotify:
    _, state = storm(routing_tree(), count=300)
    planner, _ = storm(routing_tree(), count=1)
    for n in range(0, 300, 3):  # some alerts end: closed briefs and counted ones
        planner.on_alert(state, alert(n, sequence=2, status="resolved"), 5.0)
    return state


def summary_of_detection(det: DistrictDetection) -> dict[str, Any]:
    return {
        "district": det.district,
        "series": sorted(det.anomaly),
        "thresholds": sorted(det.thresholds),
        "open": sorted([a.alert_id, a.grade.value, a.sequence] for a in det.book.open.values()),
        "closed": len(det.book.closed),
        "fed_until": det.fed_until,
    }


def summary_of_notify(state: DistrictNotify) -> dict[str, Any]:
    return {
        "district": state.district,
        "groups": sorted(state.groups),
        "escalations": len(state.escalations),
        "briefs": sorted(state.briefs),
        "seen": len(state.seen),
    }


def continued(det: DistrictDetection, windows: list[ClosedWindow]) -> list[Any]:
    return [e.model_dump() for w in windows for e in det.on_window(w, CTX)]


def test_a_district_restored_mid_incident_raises_the_same_events() -> None:
    windows = day(1000, incident_at=700)
    original = DistrictDetection("339901")
    for w in windows[:720]:  # the incident is open
        original.on_window(w, CTX)
    assert original.book.open
    data, dropped = original.encode()
    assert dropped == []
    restored = DistrictDetection.loads(data)
    assert restored.dumps() == original.dumps()
    assert continued(restored, windows[720:]) == continued(original, windows[720:])


def pressure_falling() -> list[ClosedWindow]:
    """A water main's pressure steady, then falling 3 kPa a minute, then steady low: a
    trend forecast warning, then the low-pressure alarm, then its end."""
    rng = random.Random(2)
    values = [320 + rng.gauss(0, 1) for _ in range(60)]
    values += [320 - 3 * i + rng.gauss(0, 1) for i in range(40)]
    values += [300 + rng.gauss(0, 1) for _ in range(40)]
    out = []
    for i, v in enumerate(values):
        start = T0 + 60 * i
        aggs = {
            k: [1, v, v, v] for k in ("iot.water_pressure_kpa", "iot.water_pressure_kpa@339901001")
        }
        out.append(ClosedWindow("339901", start, start + 60, aggs, dict(aggs)))
    return out


def test_a_district_restored_at_any_minute_raises_the_same_events() -> None:
    """The state written after each minute, restored, carries on exactly as the district
    never stopped: forecasts, alarms and their ends (a restored rule is a copy of the
    configured one, which a forecast once took for a changed rule, losing its trend)."""
    windows = pressure_falling()
    reference = DistrictDetection("339901")
    expected = [continued(reference, [w]) for w in windows]
    rules = {e["evidence"]["rule"] for events in expected for e in events}
    assert rules == {"water.pressure.low", "water.pressure.low.forecast"}
    for cut in range(1, len(windows)):
        det = DistrictDetection("339901")
        for w in windows[:cut]:
            det.on_window(w, CTX)
        restored = DistrictDetection.loads(det.dumps())
        assert [continued(restored, [w]) for w in windows[cut:]] == expected[cut:], cut


def river_model(name: str) -> Calibrated:
    params = next(iter(RIVER_DETECTORS[name]._unit_test_params()))
    return Calibrated(RIVER_DETECTORS[name](**params))


@pytest.mark.parametrize("name", sorted(RIVER_DETECTORS))
def test_every_river_detector_a_city_can_configure_restores_mid_stream(name: str) -> None:
    det = DistrictDetection("339901")
    det.anomaly["iot.pm25"] = (river_model(name), AnomalyGate())
    rng = random.Random(1)
    readings = [(T0 + 60 * i, 30.0 + 10 * math.sin(i / 30) + rng.gauss(0, 1)) for i in range(600)]
    readings[450] = (readings[450][0], 400.0)  # a spike after the restore
    for t, v in readings[:300]:
        det.anomaly["iot.pm25"][0].update(t, v)
    restored = DistrictDetection.loads(det.dumps())
    model, copy = det.anomaly["iot.pm25"][0], restored.anomaly["iot.pm25"][0]
    assert type(copy.detector) is type(model.detector)
    assert [copy.update(t, v) for t, v in readings[300:]] == [
        model.update(t, v) for t, v in readings[300:]
    ]


def test_a_site_model_restores_mid_stream() -> None:
    det = DistrictDetection("339901")
    det.anomaly["site:x"] = (Calibrated(SiteModel(), value_key=None), AnomalyGate())
    rows = [{"a": 100 + 10 * math.sin(i / 9), "b": 20 + 2 * math.sin(i / 9)} for i in range(400)]
    model = det.anomaly["site:x"][0]
    for row in rows[:200]:
        model.learn_one(row)
    copy = DistrictDetection.loads(det.dumps()).anomaly["site:x"][0]
    assert isinstance(copy, Calibrated)
    for row in rows[200:]:
        assert copy.score_one(row) == model.score_one(row)
        copy.learn_one(row)
        model.learn_one(row)


def test_detection_state_written_by_this_release_restores() -> None:
    expected = json.loads(DETECTION_FIXTURE.with_suffix(".json").read_text("utf-8"))
    restored = DistrictDetection.loads(DETECTION_FIXTURE.read_bytes())
    assert summary_of_detection(restored) == expected
    # and it carries on: the incident's alerts resolve once the readings are normal again
    later = day(1000, incident_at=700)[720:]
    events = [e for w in later for e in restored.on_window(w, CTX)]
    assert {e.alert_id for e in events if e.status.value == "resolved"} == {
        alert_id for alert_id, _, _ in expected["open"]
    }


def test_notify_state_written_by_this_release_restores() -> None:
    expected = json.loads(NOTIFY_FIXTURE.with_suffix(".json").read_text("utf-8"))
    restored = DistrictNotify.loads(NOTIFY_FIXTURE.read_bytes())
    assert summary_of_notify(restored) == expected
    assert all(b.alert_id == i for i, b in restored.briefs.items())


def next_release(root: type) -> type:
    """``root`` as a later release might define it: one more field, with a default."""
    return dataclasses.make_dataclass(
        root.__name__,
        [("added_later", int, dataclasses.field(default=7))],
        bases=(root,),
        namespace={"__module__": root.__module__},
    )


@pytest.mark.parametrize(
    ("codec", "fixture"), [(DETECTION_STATE, DETECTION_FIXTURE), (NOTIFY_STATE, NOTIFY_FIXTURE)]
)
def test_state_of_this_release_restores_after_a_field_is_added(
    codec: StateCodec[Any], fixture: Path
) -> None:
    later = StateCodec(
        codec.table,
        next_release(codec.root),
        codec.version + 1,
        codec.classes,
        upgrades={codec.version: lambda doc: doc},
        shared=codec._shared,
    )
    value = later.decode(fixture.read_bytes())
    assert value.added_later == 7
    assert codec.document(value) == codec.document(codec.decode(fixture.read_bytes()))


def test_a_brief_of_every_alert_field_restores_unchanged() -> None:
    state = DistrictNotify("339901")
    planner, _ = storm(routing_tree(), count=1)
    planner.on_alert(state, alert(1, status="resolved"), 0.0)
    back = DistrictNotify.loads(state.dumps())
    assert back.briefs == state.briefs and back == state


def write_fixtures() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for path, value, summary in (
        (DETECTION_FIXTURE, detection_scenario(), summary_of_detection),
        (NOTIFY_FIXTURE, notify_scenario(), summary_of_notify),
    ):
        if path.exists():
            sys.exit(f"{path} exists: a release's fixture is kept, not rewritten")
        path.write_bytes(value.encode()[0])
        path.with_suffix(".json").write_text(json.dumps(summary(value), indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    write_fixtures()


@pytest.mark.parametrize("codec", [DETECTION_STATE, NOTIFY_STATE], ids=lambda c: c.table)
def test_every_class_a_table_registers_can_be_restored(codec: StateCodec[Any]) -> None:
    """A registered class that is a dataclass needs no registering; any other must annotate
    the attributes its state is rebuilt from (or write its own state)."""
    assert codec.check_registered() == []


_OPEN_COMPOSITE = """
import os
import subprocess
import sys
from detectors.composite import WeakSignal
from streams.alerting.detection import DETECTION_STATE, DistrictDetection
state = DistrictDetection("339901")
for n, domain in enumerate(["fire", "traffic", "citizen", "environment", "sanitation", "water"]):
    state.correlator.add(WeakSignal(n, domain, domain + ".x", "339901001", 0.5, "unusual"))
assert state.correlator.evaluate(10) is not None
sys.stdout.write(DETECTION_STATE.document(state).hex())
"""


def test_a_district_s_detection_state_encodes_to_the_same_bytes_in_every_process() -> None:
    """A changelog value does not depend on the writing process's string hashing (an
    open composite's domains were once a set): a migration or a restore compares and
    rewrites the same bytes whichever worker wrote them."""
    written = {
        subprocess.run(
            [sys.executable, "-c", _OPEN_COMPOSITE],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        for seed in (1, 2, 3, 4, 5, 6)
    }
    assert len(written) == 1 and next(iter(written))
