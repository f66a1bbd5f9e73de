"""How soon public-opinion warnings catch a smell only citizens report, and how often
they warn of nothing, for the cluster boundaries a city may choose.

Run from the repository root::

    .venv/bin/python bench/opinion.py [--seeds 10] [--days 7] [--cluster 3 --cluster 4]
                                      [--hourly-prior 2 --hourly-prior off] [--scale 1]
                                      [--cluster-chance 0.001 --cluster-chance off]

Everything runs in this process through the worker's own code, without a broker: the
simulated city's appeals (:class:`~streams.sim.appeals.AppealSource`) are read by the
appeals' ingest stage (:class:`~streams.voice.ingest.AppealIngest`: de-identified,
categorised, scored), counted and tallied in each district's windows
(:class:`~streams.state.windows.DistrictWindows`), and every closed minute goes to the
district's detection (:class:`~streams.alerting.detection.DistrictDetection`) with
``config/thresholds.yaml``, only its ``public_opinion`` cluster boundary for grade IV
replaced by each ``--cluster`` value (the higher grades keep their distance above it)
and, with ``--hourly-prior``, its ``hourly_prior`` by each value in hours (``off``: a
prior no history outweighs, so the usual counts are the whole day's, as before the
hours of the day were kept), and with ``--cluster-chance`` its ``cluster_chance`` by each
value (``off``: streets' boundaries not lifted).
Each district has one sensor reading a minute besides its appeals, as the demo city's
sensors keep its windows closing.

* **Detection time**: for each seed 1..``--seeds``, with no history before it (a
  fresh worker, as in the demo) and with a day of the city's appeals before it, the demo's smell
  (:func:`~streams.sim.incidents.odour_complaints`, in the district the demo script
  picks, 30 minutes of appeals that rise from 9 to 90 an hour) and the city's everyday
  appeals; the time from the smell's start to the event time of the first
  ``public_opinion`` alert of its category and district (none within the 30 minutes:
  ``null``).
* **Warnings of nothing**: ``--days`` simulated days of the city's everyday appeals, no
  incident (seed 1000); every ``public_opinion`` alert fired counts, in the first day
  (the usual counts still unknown: only the fixed boundaries hold) and per day after.

One JSON object goes to stdout: per cluster value (and hours' prior), the detection times, their median
and maximum and how many were within 15 minutes (900 s), and the false warnings. The figures are the simulator's: its everyday appeals spread over streets and
categories by the districts' profiles, not a real city's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.progress import Progress

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.rules import load_thresholds
from streams.core.config import CityConfig, load_config
from streams.core.messages import APPEALS_TOPIC, AlertEvent, AlertKind, AlertStatus
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Accepted, Ingestor
from streams.kafka.worker import opinion_categories
from streams.sim.appeals import AppealSource, SimAppeal
from streams.sim.incidents import Incident, default_incidents
from streams.state.windows import DistrictWindows
from streams.voice.appeals import load_appeals
from streams.voice.channels import AppealIntake
from streams.voice.emotion import Scorer
from streams.voice.ingest import AppealIngest

START = datetime(2026, 11, 24, tzinfo=UTC)  # the simulator's fixed start
HEARTBEAT = "iot.pm25"  # the sensor reading each district has every minute
KEY = b"bench-opinion-key-not-for-production-0123"
WHOLE_DAY = 1e12  # an hours' prior no history outweighs: the whole day's usual count
KEEP = -1.0  # the shipped cluster_chance


def context(
    cfg: CityConfig, cluster_iv: float, hourly_prior: float | None, chance: float | None = KEEP
) -> DetectionContext:
    """Detection as the worker runs it, the cluster boundaries moved to start at
    ``cluster_iv`` (the higher grades keep their distance above grade IV), the hours'
    prior set to ``hourly_prior`` seconds (None: the shipped one) and the streets' lift
    to ``chance`` (None: no lift; :data:`KEEP`: the shipped one)."""
    rules = load_thresholds(cfg)
    shipped = rules.opinion.cluster
    shift = cluster_iv - shipped["IV"]
    cluster = {grade: bound + shift for grade, bound in shipped.items()}
    update: dict[str, Any] = {"cluster": cluster}
    if hourly_prior is not None:
        update["hourly_prior"] = hourly_prior
    if chance != KEEP:
        update["cluster_chance"] = chance
    opinion = rules.opinion.model_copy(update=update)
    rules = type(rules)(
        rules.defaults, rules.rules, rules.street_district, rules.nonnegative, opinion
    )
    return DetectionContext(
        cfg,
        rules,
        anomaly=None,
        forecast_horizon_s=0,
        opinion_categories=opinion_categories(load_appeals(cfg)),
    )


def run_city(
    cfg: CityConfig,
    ingest: AppealIngest,
    ctx: DetectionContext,
    appeals: Iterable[SimAppeal],
    start: datetime,
    end: datetime,
) -> list[AlertEvent]:
    """Every public-opinion alert event the appeals give, minute by minute from ``start``
    until ``end``."""
    windows = {d: DistrictWindows(d) for d in cfg.districts}
    detection = {d: DistrictDetection(d) for d in cfg.districts}
    events: list[AlertEvent] = []
    pending = iter(appeals)
    nxt = next(pending, None)
    minute = start.timestamp()
    offset = 0
    while minute < end.timestamp():
        for w in windows.values():
            w.add(HEARTBEAT, 30.0, minute + 1)
        while nxt is not None and nxt.at.timestamp() < minute + 60:
            offset += 1
            result = ingest.accept(
                APPEALS_TOPIC,
                0,
                offset,
                nxt.district.encode(),
                nxt.record(),
                nxt.at + timedelta(minutes=1),
            )
            if isinstance(result, Accepted):
                w = windows[nxt.district]
                if w.add(result.indicator, result.value, result.t) and result.facets:
                    f = result.facets
                    w.tally(result.t, f.keys, f.counts, f.sample, f.rank)
            nxt = next(pending, None)
        for district, w in windows.items():
            for closed in w.close_all(until=minute):
                events += detection[district].on_window(closed, ctx)
        minute += 60
    return [e for e in events if e.kind is AlertKind.PUBLIC_OPINION]


def smell(cfg: CityConfig) -> Incident:
    (inc,) = [i for i in default_incidents(cfg, START, appeals=True) if i.category is not None]
    return inc


def detection_time(
    cfg: CityConfig,
    ingest: AppealIngest,
    ctx: DetectionContext,
    seed: int,
    history_h: float,
    scale: float = 1.0,
) -> float | None:
    """Seconds from the smell's start to its first warning, the city's appeals running
    ``history_h`` hours before it (its incident starts 15 minutes after the script's start)."""
    inc = smell(cfg)
    begin = START - timedelta(hours=history_h)
    source = AppealSource(
        cfg, seed=seed, start=begin, run=f"{seed:08x}", incidents=(inc,), rate_scale=scale
    )
    events = run_city(cfg, ingest, ctx, source.appeals_in(inc.end - begin), begin, inc.end)
    fired = [
        e.event_time.timestamp() - inc.start.timestamp()
        for e in events
        if e.status is AlertStatus.FIRING
        and e.district == inc.district
        and e.evidence.category == inc.category
        and e.event_time >= inc.start
    ]
    return min(fired, default=None)


def false_warnings(
    cfg: CityConfig, ingest: AppealIngest, ctx: DetectionContext, days: float, scale: float = 1.0
) -> tuple[Counter[str], Counter[str]]:
    """The warnings ``days`` of everyday appeals raise: in the districts' first day (their
    usual counts still unknown), and after it, by grade."""
    span = timedelta(days=days)
    source = AppealSource(cfg, seed=1000, start=START, run="000003e8", rate_scale=scale)
    events = run_city(cfg, ingest, ctx, source.appeals_in(span), START, START + span)
    warm = (START + timedelta(days=1)).timestamp()
    fired = [e for e in events if e.status is AlertStatus.FIRING]
    first = Counter(e.grade.roman for e in fired if e.event_time.timestamp() < warm)
    later = Counter(e.grade.roman for e in fired if e.event_time.timestamp() >= warm)
    return first, later


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the smell (10)")
    parser.add_argument("--days", type=float, default=7.0, help="days of everyday appeals (7)")
    parser.add_argument(
        "--cluster", type=float, action="append", help="grade IV cluster boundaries to compare"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="the city's everyday appeals times this (a bigger city; the smell stays)",
    )
    parser.add_argument(
        "--hourly-prior",
        action="append",
        help="hours' priors to compare, in hours ('off': the whole day's usual count only)",
    )
    parser.add_argument(
        "--cluster-chance",
        action="append",
        help="streets' lifts to compare: the chance of grade IV's count ('off': no lift)",
    )
    args = parser.parse_args(argv)
    priors: list[float | None] = [
        WHOLE_DAY if p == "off" else float(p) * 3600 for p in args.hourly_prior or []
    ] or [None]
    chances: list[float | None] = [
        None if c == "off" else float(c) for c in args.cluster_chance or []
    ] or [KEEP]
    cfg = load_config()
    ingestor = Ingestor(cfg, Deidentifier(KEY), max_age_s=10 * 365 * 86400.0)
    ingest = AppealIngest(ingestor, AppealIntake(load_appeals(cfg), ingestor.deid), Scorer())
    shipped = load_thresholds(cfg).opinion.cluster["IV"]
    out: dict[str, Any] = {
        "seeds": args.seeds,
        "days": args.days,
        "scale": args.scale,
        "shipped_iv": shipped,
    }
    with Progress(transient=True) as progress:
        runs = [(iv, p, c) for iv in args.cluster or [shipped] for p in priors for c in chances]
        for iv, prior, chance in runs:
            ctx = context(cfg, iv, prior, chance)
            name = f"cluster_iv_{iv:g}"
            if prior is not None:
                name += "_whole_day" if prior == WHOLE_DAY else f"_hourly_prior_{prior / 3600:g}h"
            if chance != KEEP:
                name += "_no_lift" if chance is None else f"_chance_{chance:g}"
            task = progress.add_task(name, total=2 * args.seeds + 1)
            result: dict[str, Any] = {}
            for history_h in (0.0, 24.0):
                times = []
                for seed in range(1, args.seeds + 1):
                    times.append(detection_time(cfg, ingest, ctx, seed, history_h, args.scale))
                    progress.advance(task)
                found = [t for t in times if t is not None]
                result[f"after_{history_h:g}h_of_history"] = {
                    "detection_s": times,
                    "median_s": statistics.median(found) if found else None,
                    "max_s": max(found, default=None),
                    "within_900_s": sum(t <= 900 for t in found),
                }
            first, later = false_warnings(cfg, ingest, ctx, args.days, args.scale)
            progress.advance(task)
            result["false_warnings_first_day"] = dict(sorted(first.items()))
            result["false_warnings_per_day_after"] = round(
                sum(later.values()) / max(args.days - 1, 1e-9), 2
            )
            result["false_by_grade_after"] = dict(sorted(later.items()))
            out[name] = result
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
