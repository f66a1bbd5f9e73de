"""Site models: co-located indicators scored jointly, so a broken relationship is seen."""

from __future__ import annotations

import math
import random
from pathlib import Path

from detectors.anomaly import AnomalyGate
from detectors.calibrated import Calibrated
from detectors.site import SiteModel
from streams.alerting.replay import replay_file
from streams.core.config import load_config

CFG = load_config()


def traffic(n: int, seed: int = 4) -> list[tuple[float, float]]:
    """(volume, occupancy) of one detector: occupancy follows volume, with noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        volume = 900.0 + 600.0 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 40)
        out.append((volume, 0.025 * volume + rng.gauss(0, 0.8)))
    return out


def test_a_normal_volume_at_an_abnormal_occupancy_is_seen() -> None:
    history = traffic(3000)
    model = SiteModel()
    for volume, occupancy in history:
        model.learn_one({"volume": volume, "occupancy": occupancy})
    volumes = [v for v, _ in history]
    occupancies = [o for _, o in history]
    # a stalled lane: rush-hour occupancy at a night-time volume; each value alone has
    # been seen many times
    stalled = {"volume": 400.0, "occupancy": 37.0}
    assert min(volumes) < 400.0 < max(volumes)
    assert min(occupancies) < 37.0 < max(occupancies)
    along = {"volume": 1480.0, "occupancy": 0.025 * 1480.0}  # rush hour, as usual
    assert model.score_one(stalled) > 10 * model.score_one(along)
    assert model.score_one(along) < 3.0


def test_a_site_alerts_through_the_gate_once_and_not_on_usual_readings() -> None:
    site = SiteModel()
    model = Calibrated(site, value_key=None, settle=site.settle)
    gate = AnomalyGate(model.config)
    onsets = []
    data = traffic(4000)
    for i, (volume, occupancy) in enumerate(data):
        if 3500 <= i < 3506:
            occupancy = 0.025 * volume + 15.0  # the lane stalls for six readings
        decision = gate.update(
            300.0 * i, model.update_features(300.0 * i, {"v": volume, "o": occupancy})
        )
        if decision.event == "firing":
            onsets.append(i)
    assert len(onsets) == 1 and 3500 <= onsets[0] < 3506


def test_replay_site_scores_the_columns_jointly(tmp_path: Path) -> None:
    rows = ["timestamp,volume,occupancy"]
    t0 = 1_420_070_400  # 2015-01-01 00:00
    data = traffic(2000, seed=9)
    for i, (volume, occupancy) in enumerate(data):
        if 1800 <= i < 1806:
            occupancy = 0.025 * volume + 15.0
        stamp = __import__("datetime").datetime.fromtimestamp(
            t0 + 300 * i, __import__("datetime").UTC
        )
        rows.append(f"{stamp:%Y-%m-%d %H:%M:%S},{volume:.1f},{occupancy:.2f}")
    path = tmp_path / "detector.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    joint, _ = replay_file(path, CFG, district="339901", site=True)
    alone, _ = replay_file(path, CFG, district="339901")
    site = [line for line in joint if line["evidence"]["rule"] == "anomaly.site"]
    firing = [line for line in site if line["status"] == "firing"]
    assert len(firing) == 1
    assert firing[0]["indicators"] == ["replay.volume", "replay.occupancy"]
    assert firing[0]["event_time"] >= "2015-01-07 06:00:00"  # row 1800 or later
    assert firing[0]["event_time"] <= "2015-01-07 06:30:00"
    # without --site the same lines, minus the site's
    assert [line for line in joint if line["evidence"]["rule"] != "anomaly.site"] == alone
