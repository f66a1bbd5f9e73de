"""The batch handler under a fuzzer: any bytes in, every record counted, held or
dead-lettered, and nothing raised.

One fuzz input is a batch. It is cut into records at ``SEPARATOR``; each record's
first byte picks its input topic and its key (a district, another district, garbage
or none), the rest is its value. :func:`check_batch` runs them through a real
:class:`~streams.kafka.processor.VitalsProcessor` (in-memory tables, outputs collected
instead of sent) and checks what a user relies on:

- the handler returns: no record makes it raise;
- every record has exactly one outcome: a reading, a dead letter, or a place among
  the records held back as ahead of their stream;
- every output parses as its schema, and no dead letter shows a record's bytes.

Run by ``tests/ingest/test_fuzz.py``: the corpus in ``tests/fuzz/corpus`` as regression
cases, and a short coverage-guided atheris run (``python -m tests.fuzz.run
-runs=N NEW_INPUTS_DIR tests/fuzz/corpus``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from faust.serializers import codecs

from streams.alerting.detection import DetectionContext
from streams.alerting.rules import load_thresholds
from streams.core.config import load_config
from streams.core.messages import (
    EVENT_TOPICS,
    TOPIC_MESSAGES,
)
from streams.core.settings import Settings
from streams.kafka.feed import InputRecord
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import DETECTION_TABLE, TABLE_NAME, MemoryTable

SEPARATOR = b"\n\x00\n"
CHANGELOG_CODECS = {
    f"cityvitals-{TABLE_NAME}-changelog": "district_windows",
    f"cityvitals-{DETECTION_TABLE}-changelog": "district_detection",
}
CFG = load_config()
CTX = DetectionContext(CFG, load_thresholds(CFG))
TOPICS = sorted(EVENT_TOPICS.values())
KEYS: list[bytes | None] = [b"339901", b"339902", b"999999", None]


class _Outputs:
    def __init__(self, sent: list[tuple[str, bytes | None, bytes]]) -> None:
        self._sent = sent
        self._records: list[tuple[str, bytes | None, bytes]] = []

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._records.append((topic, key, value))

    def __len__(self) -> int:
        return len(self._records)

    async def send(self, *, wait: bool = True, counted: bool = True) -> list[Any]:
        self._sent.extend(self._records)
        self._records.clear()
        return []


class Harness:
    """One processor, fed batch after batch (offsets keep growing, as on a topic)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.table = MemoryTable()
        self.detection_table = MemoryTable()
        self.offset = 0
        self.settings = Settings(
            partitions=4, max_event_bytes=4096, max_attributes_bytes=1024, hold_max_bytes=8192
        )

        self.processor = VitalsProcessor(
            self.table,
            CFG,
            self.settings,
            outputs=lambda: _Outputs(self.sent),  # type: ignore[arg-type,return-value]
            progress=lambda topic, partition: (0, 0),
            detection_table=self.detection_table,
            detection=CTX,
        )
        self.loop = asyncio.new_event_loop()

    def records(self, data: bytes) -> list[InputRecord]:
        out = []
        for chunk in data.split(SEPARATOR):
            head, value = (chunk[0], chunk[1:]) if chunk else (0, b"")
            self.offset += 1
            out.append(
                InputRecord(
                    TOPICS[head % len(TOPICS)],
                    0,
                    self.offset,
                    KEYS[(head >> 4) % len(KEYS)],
                    None if head == 0xFF else value,
                )
            )
        return out

    def held(self) -> set[int]:
        """Offsets of the records held back in the district states."""
        return {h[2][1] for state in self.table.values() for h in state.held_records()}

    def check_batch(self, data: bytes) -> None:
        records = self.records(data)
        self.sent.clear()
        self.loop.run_until_complete(self.processor.process_batch(records))
        check_outputs(records, self.sent, self.held())


def check_outputs(
    records: Sequence[InputRecord], sent: list[tuple[str, bytes | None, bytes]], held: set[int]
) -> None:
    """Every output parses; every record has one outcome: published once, or held."""
    offsets = {r.offset for r in records}
    outcomes: dict[int, int] = {}
    for topic, _, value in sent:
        if topic.endswith("-changelog"):  # the state: it must restore
            codecs.get_codec(CHANGELOG_CODECS[topic]).loads(value)
            continue
        doc = TOPIC_MESSAGES[topic].model_validate_json(value)
        origin = getattr(doc, "origin", None)
        if origin is not None and origin.offset in offsets:
            outcomes[origin.offset] = outcomes.get(origin.offset, 0) + 1
    twice = {o: n for o, n in outcomes.items() if n > 1}
    assert not twice, f"records with more than one outcome: {twice}"
    for r in records:
        assert (r.offset in outcomes) != (r.offset in held), (
            f"record {r.offset} ({r.topic}, key {r.key!r}): "
            f"{'published and held' if r.offset in held else 'neither published nor held'}"
        )


_HARNESS: Harness | None = None


def test_one_input(data: bytes) -> None:
    global _HARNESS
    if _HARNESS is None:
        _HARNESS = Harness()
    _HARNESS.check_batch(data)
