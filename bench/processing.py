"""CPU cost of the worker's batch handler per event, in one process, without Kafka.

Run from the repository root::

    .venv/bin/python bench/processing.py [--events 200000] [--batch 2000] [--runs 5] [--seed 7]
                                         [--appeals 0.0]

Why beside ``bench/throughput.py``: the end-to-end rate moves by 10 % or more from run to
run on a shared 2-core machine (the broker, the worker and the producer compete, and the
worker's batch sizes follow the timing), and so does the worker's CPU time, since
smaller batches cost more per event. Here the work is fixed: the same simulated events
(``generate_events`` of the throughput bench, same seed) go through a real
:class:`~streams.kafka.processor.VitalsProcessor` with in-memory tables, in batches of
``--batch`` records in event-time order, with the outputs (readings, vitals, alerts, dead
letters and the table changelogs, encoded as the worker encodes them) collected instead
of sent; after the last batch the state is flushed (``flush_state``). Only
``process_batch`` and ``flush_state`` are timed, with ``time.process_time`` (this
process's CPU time), and each run starts from fresh state (the models are built as the
worker builds them, from the repository's ``config/``), with the worker's garbage
collection (:func:`~streams.kafka.worker.tune_gc`: start-up objects, such as the appeals'
dictionary and lexicons, frozen out of the collector's scans, which would otherwise
scan them in every full collection and count it against the handler).

One JSON object goes to stdout: ``cpu_us_per_event`` (median over ``--runs``), every
run's figure, the number of outputs per topic of the first run (the same in every run,
or the bench stops) and the machine. To compare two versions, run this file in both
trees alternately (it imports ``streams`` from the current directory) and compare the
medians; the figure is the handler's, not the broker's or the network's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections import Counter
from typing import Any

from throughput import generate_events

from streams.alerting.detection import DetectionContext
from streams.alerting.rules import load_silences, load_thresholds
from streams.core.config import load_config
from streams.core.settings import Settings
from streams.kafka.feed import InputRecord, key_partition
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import MemoryTable
from streams.kafka.worker import opinion_categories, tune_gc
from streams.voice.appeals import load_appeals


class _Outputs:
    """The handler's producer batch: records counted per topic, nothing sent."""

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts
        self._n: Counter[str] = Counter()

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._n[topic] += 1

    def __len__(self) -> int:
        return sum(self._n.values())

    async def send(self, *, wait: bool = True, counted: bool = True) -> list[Any]:
        self._counts.update(self._n)
        self._n.clear()
        return []


def batches(
    n: int, seed: int, size: int, partitions: int, appeals: float = 0.0
) -> list[list[InputRecord]]:
    """The simulated events as input records (offsets per topic partition), in batches."""
    offsets: Counter[tuple[str, int]] = Counter()
    records = []
    for ev in generate_events(n, seed, 0.0, appeals):
        partition = key_partition(ev.key, partitions) if ev.key else 0
        offsets[(ev.topic, partition)] += 1
        records.append(
            InputRecord(ev.topic, partition, offsets[(ev.topic, partition)], ev.key, ev.value)
        )
    return [records[i : i + size] for i in range(0, len(records), size)]


def run_once(
    work: list[list[InputRecord]], partitions: int, with_appeals: bool
) -> tuple[float, Counter[str]]:
    """CPU seconds of one fresh processor over every batch, and its outputs per topic."""
    cfg = load_config()
    rules = load_thresholds(cfg)
    appeals = load_appeals(cfg)
    detection = DetectionContext(
        cfg,
        rules,
        silences=load_silences(cfg, rules),
        opinion_categories=opinion_categories(appeals),
    )
    # without appeals the bench's windows do not wait for that source at start
    waits = {} if with_appeals else {"appeals": 0.001}
    settings = Settings(partitions=partitions, source_wait_s=waits)
    counts: Counter[str] = Counter()
    processor = VitalsProcessor(
        MemoryTable(),
        cfg,
        settings,
        outputs=lambda: _Outputs(counts),  # type: ignore[arg-type,return-value]
        progress=lambda topic, partition: (0, 0),
        detection_table=MemoryTable(),
        detection=detection,
        appeals=appeals,
    )
    loop = asyncio.new_event_loop()
    tune_gc(settings)  # as the worker does: start-up objects frozen out of the collector's scans
    try:
        started = time.process_time()
        for batch in work:
            loop.run_until_complete(processor.process_batch(batch))
        loop.run_until_complete(processor.flush_state())
        used = time.process_time() - started
    finally:
        loop.close()
    return used, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--appeals", type=float, default=0.0, help="share of appeals")
    args = parser.parse_args(argv)
    work = batches(args.events, args.seed, args.batch, args.partitions, args.appeals)
    n = sum(len(b) for b in work)
    per_event: list[float] = []
    first: Counter[str] | None = None
    for i in range(args.runs):
        used, counts = run_once(work, args.partitions, args.appeals > 0)
        if first is None:
            first = counts
        elif counts != first:
            print(f"run {i + 1} gave other outputs than run 1", file=sys.stderr)
            return 1
        per_event.append(used / n * 1e6)
        print(f"run {i + 1}: {per_event[-1]:.2f} µs per event", file=sys.stderr)
    assert first is not None
    print(
        json.dumps(
            {
                "events": n,
                "batch": args.batch,
                "appeals": args.appeals,
                "cpu_us_per_event": round(statistics.median(per_event), 2),
                "runs": [round(x, 2) for x in per_event],
                "outputs": dict(sorted(first.items())),
                "python": platform.python_version(),
                "machine": platform.machine(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
