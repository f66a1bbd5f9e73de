"""``cityvitals replay``: the live detectors and lifecycle, offline over a CSV file."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streams.alerting.replay import ReplayError, replay_file
from streams.cli import cli
from streams.core.config import load_config
from streams.ingest.ingestor import outside_range

CFG = load_config()
START = datetime(2026, 3, 2, 0, 0)  # a Monday, naive: city wall time


def daily(t: datetime) -> float:
    hour = t.hour + t.minute / 60
    return 100 + 40 * math.sin(2 * math.pi * (hour - 6) / 24)


def write_csv(path: Path, rows: list[tuple[str, ...]], header: str = "timestamp,value") -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    return path


def series(days: int, spike_at: datetime | None = None, step_min: int = 5) -> list[tuple[str, str]]:
    rows = []
    t = START
    i = 0
    while t < START + timedelta(days=days):
        value = daily(t) + (i * 7919 % 13 - 6) * 0.5  # deterministic noise
        if spike_at is not None and spike_at <= t < spike_at + timedelta(minutes=15):
            value += 400
        rows.append((t.strftime("%Y-%m-%d %H:%M:%S"), f"{value:.3f}"))
        t += timedelta(minutes=step_min)
        i += 1
    return rows


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["replay", *args])
    return result.exit_code, result.output


def read_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_spike_after_warm_up_fires_at_its_row_and_resolves(tmp_path: Path) -> None:
    spike = START + timedelta(days=3, hours=3)  # 03:00, where the daily curve is low
    src = write_csv(tmp_path / "site.csv", series(4, spike))
    out = tmp_path / "alerts.jsonl"
    code, output = run_cli("--input", str(src), "--out", str(out))
    assert code == 0, output
    lines = read_lines(out)
    firing = [x for x in lines if x["status"] == "firing"]
    assert len(firing) == 1
    alert = firing[0]
    # the onset is one of the spike's rows (the models average a few readings)
    spike_rows = {(spike + timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S") for m in (0, 5, 10)}
    assert alert["event_time"] in spike_rows
    assert alert["kind"] == "alarm" and alert["indicators"] == ["replay.value"]
    assert alert["evidence"]["rule"] == "anomaly.seasonal-context"  # type: ignore[index]
    assert {"alert_id", "fingerprint", "grade", "kind", "event_time"} <= set(alert)
    mine = [x for x in lines if x["alert_id"] == alert["alert_id"]]
    assert [x["status"] for x in mine][-1] == "resolved"
    assert [x["sequence"] for x in mine] == list(range(1, len(mine) + 1))


def test_a_quiet_series_raises_nothing(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "site.csv", series(4))
    lines, stats = replay_file(src, CFG, district="339901")
    assert lines == [] and stats.rows == 4 * 288 and stats.late == 0


def test_irregular_sampling_gaps_duplicates_and_a_backward_step_do_not_break_it(
    tmp_path: Path,
) -> None:
    rows = series(2)
    rows = [*rows[:100], rows[99], *rows[100:]]  # a duplicate timestamp
    rows[150], rows[151] = rows[151], rows[150]  # a 5-minute backward step: within lateness
    back = (START - timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S")
    rows.insert(300, (back, "90"))  # far backward: its minute has closed
    gap = START + timedelta(days=6)
    rows += [
        ((gap + timedelta(minutes=7 * i + i % 3)).strftime("%Y-%m-%d %H:%M:%S"), "101")
        for i in range(50)
    ]
    src = write_csv(tmp_path / "odd.csv", rows)
    lines, stats = replay_file(src, CFG, district="339901")
    assert stats.rows == len(rows)
    assert stats.late == 1  # only the far backward step, as the worker's "late"
    assert all(x["status"] in ("firing", "updated", "resolved") for x in lines)


def test_a_mapped_column_gets_its_threshold_rules(tmp_path: Path) -> None:
    rows = []
    for m in range(0, 90):
        t = START + timedelta(minutes=m)
        level = 200 if 20 <= m < 45 else 30
        rows.append((t.strftime("%Y-%m-%d %H:%M:%S"), str(level), "5"))
    src = write_csv(tmp_path / "air.csv", rows, header="timestamp,pm25,other")
    out = tmp_path / "alerts.jsonl"
    code, output = run_cli(
        "--input",
        str(src),
        "--out",
        str(out),
        "--indicator",
        "pm25=iot.pm25",
        "--district",
        "339902",
    )
    assert code == 0, output
    lines = read_lines(out)
    rules = {x["evidence"]["rule"] for x in lines}  # type: ignore[index]
    assert rules == {"environment.pm25.mean15", "environment.pm25.mean15.forecast"}
    # the trend warned first (预警), and the warning ended when the level crossed
    warning = [x for x in lines if x["kind"] == "warning"]
    assert [x["status"] for x in warning] == ["firing", "resolved"]
    assert warning[0]["evidence"]["forecast"]["limit"] == 60  # type: ignore[index]
    assert warning[-1]["evidence"]["detail"] == "the level reached the limit"  # type: ignore[index]
    lines = [x for x in lines if x["kind"] == "alarm"]
    firing = [x for x in lines if x["status"] == "firing"]
    assert warning[0]["event_time"] < firing[0]["event_time"]  # type: ignore[operator]
    assert len(firing) == 1 and firing[0]["district"] == "339902"
    assert firing[0]["indicators"] == ["iot.pm25"] and firing[0]["department"] == "environment"
    # Laocheng's override (60/100/150/250) and a 5-minute pending: after the minute
    # 00:22 the 15-minute mean is (12 x 30 + 3 x 200) / 15 = 64 >= 60, so the breach
    # begins at 00:23 and the rule fires at 00:28, on the minute whose row is 00:27
    assert firing[0]["event_time"] == "2026-03-02 00:27:00"
    # by then the mean is (7 x 30 + 8 x 200) / 15 = 120.7: it fires at grade III (>= 100)
    assert firing[0]["grade"] == 3
    assert firing[0]["evidence"]["threshold"] == 100  # type: ignore[index]
    assert [x["status"] for x in lines][-1] == "resolved"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,value\n2026-01-01 00:00:00,1\n", "no 'timestamp' column"),
        ("timestamp\n2026-01-01 00:00:00\n", "no value column"),
        ("timestamp,value\n2026-01-01 00:00:00,abc\n", ":2: column 'value': 'abc' is not a number"),
        ("timestamp,value\nyesterday,1\n", ":2: timestamp 'yesterday' is not ISO 8601"),
    ],
)
def test_bad_input_stops_with_file_line_and_reason(
    tmp_path: Path, content: str, message: str
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(ReplayError, match=message):
        replay_file(src, CFG, district="339901")
    code, output = run_cli("--input", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and "cannot replay" in output and "Traceback" not in output


def test_unknown_indicator_or_column_is_refused(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "s.csv", series(1))
    with pytest.raises(ReplayError, match=r"unknown indicator 'iot\.pm99'"):
        replay_file(src, CFG, district="339901", mapping={"value": "iot.pm99"})
    with pytest.raises(ReplayError, match=r"columns not in the file: \['speed'\]"):
        replay_file(src, CFG, district="339901", mapping={"speed": "traffic.speed_kmh"})
    code, output = run_cli(
        "--input", str(src), "--out", str(tmp_path / "o"), "--indicator", "value"
    )
    assert code == 2 and "COLUMN=CODE" in output


def minutes(values: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """One row a minute from START holding ``values``."""
    return [
        ((START + timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S"), *row)
        for m, row in enumerate(values)
    ]


def test_a_mapped_value_outside_the_range_stops_at_its_first_row(tmp_path: Path) -> None:
    # traffic.speed_kmh: range [0, 200] km/h; line 1 is the header, so rows[3] is line 5
    rows = minutes([("50", "1")] * 10)
    rows[3] = (rows[3][0], "412", "1")
    rows[6] = (rows[6][0], "-1", "1")  # a second bad row, later
    src = write_csv(tmp_path / "data.csv", rows, header="timestamp,speed,other")
    with pytest.raises(ReplayError) as exc:
        replay_file(src, CFG, district="339901", mapping={"speed": "traffic.speed_kmh"})
    assert str(exc.value) == (
        f"{src}:5: column 'speed' (traffic.speed_kmh) = 412 km/h"
        " is outside the physical range [0, 200]"
    )
    out = tmp_path / "alerts.jsonl"
    code, output = run_cli(
        "--input", str(src), "--out", str(out), "--indicator", "speed=traffic.speed_kmh"
    )
    assert code == 2 and "Traceback" not in output
    assert "cannot replay" in output and str(exc.value) in output
    assert ":8:" not in output
    assert not out.exists()  # stopped before writing a line


def test_the_range_check_is_the_workers(tmp_path: Path) -> None:
    indicator = CFG.indicators["iot.water_level_m"]
    src = write_csv(tmp_path / "level.csv", minutes([("1",), ("-5.5",)]), header="timestamp,lvl")
    with pytest.raises(ReplayError) as exc:
        replay_file(src, CFG, district="339901", mapping={"lvl": indicator.code})
    assert str(exc.value) == f"{src}:3: column 'lvl' (iot.water_level_m) = " + str(
        outside_range(indicator, -5.5)
    )
    assert "-5.5 m is outside the physical range [-5, 40]" in str(exc.value)


def test_values_at_the_range_bounds_are_accepted(tmp_path: Path) -> None:
    # traffic.speed_kmh [0, 200]; iot.water_level_m [-5, 40]; non-finite stays blank
    rows = minutes([("0", "-5"), ("200", "40"), ("nan", "inf"), ("", "12.5"), ("0.0", "40.0")])
    src = write_csv(tmp_path / "edge.csv", rows, header="timestamp,speed,level")
    mapping = {"speed": "traffic.speed_kmh", "level": "iot.water_level_m"}
    _, stats = replay_file(src, CFG, district="339901", mapping=mapping)
    assert stats.rows == 5 and stats.values == 7 and stats.blank == 3
    out = tmp_path / "alerts.jsonl"
    code, output = run_cli(
        "--input",
        str(src),
        "--out",
        str(out),
        "--indicator",
        "speed=traffic.speed_kmh",
        "--indicator",
        "level=iot.water_level_m",
    )
    assert code == 0, output
    assert out.exists()


def test_an_unmapped_column_takes_any_finite_value(tmp_path: Path) -> None:
    # 'speed' out of traffic.speed_kmh's range is fine while it is replay.speed
    rows = minutes([("1e9",), ("-412",), ("nan",), ("0",)])
    src = write_csv(tmp_path / "raw.csv", rows, header="timestamp,speed")
    _, stats = replay_file(src, CFG, district="339901")
    assert stats.rows == 4 and stats.values == 3 and stats.blank == 1
