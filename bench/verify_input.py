"""The fault verifier's input: the simulated city mixed with hostile records, produced
paced by event time with one full-speed back-fill, each record labelled with the
outcome the ingest must give it.

Hostile records (``hostile_sets`` sets of :meth:`Hostile.regular`, at seeded places
spread over the planned span; the ones that may kill a worker outright,
:meth:`Hostile.poison`, once, after the last fault, so that a crash on them cannot
hide what the faults do):

- personal data in ``event_id``, ``source``, attribute keys and numeric attribute
  values: valid, counted, and no raw identifier may appear downstream;
- a duplicated JSON key (``duplicate_key``), events dated 1970-01-01 and
  0001-01-01 (``too_old``), one event dated wall-clock now + 250 s while the
  simulated stream lies hours in the past (``future_event_time``; one at a time,
  never two in a row of one district and topic, which would be a stream jumping
  ahead), a phone number as street (``unknown_street``), a tombstone
  (``bad_json``) and a record without a key (``key_mismatch``);
- poison: events of 900 KB and 10 MB (``too_large``) and attributes nested 300
  levels deep (``too_deep``).

Every hostile record is an ``iot.pm25`` reading of a real district and street,
dated at the simulated stream's current time, so that it breaks one rule only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer
from verify_oracle import AppealReplay, Produced, expect

from streams.core.config import CityConfig
from streams.core.messages import APPEALS_TOPIC
from streams.sim.simulator import CitySimulator

IOT = "city.events.iot"
HOTLINE = "city.events.hotline"
PRODUCER_MAX_REQUEST = 16 * 1024 * 1024


@dataclass(frozen=True)
class Labelled:
    """A record to produce and the outcome it must get (None: counted, else the reason)."""

    topic: str
    key: bytes | None
    value: bytes | None
    stream_time: datetime  # where it sits in the simulated stream: pacing, record timestamp
    label: str
    expected: str | None
    pii: tuple[str, ...] = ()


class Hostile:
    """Builders of hostile records, each in a seeded district and street."""

    def __init__(self, cfg: CityConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.rng = rng
        self.n = 0

    def _place(self) -> tuple[str, str]:
        district = self.rng.choice(self.cfg.city.districts)
        return district.code, self.rng.choice(district.streets).code

    def _body(self, t: datetime, **fields: Any) -> dict[str, Any]:
        self.n += 1
        district, street = self._place()
        body: dict[str, Any] = {
            "event_id": f"verify-{self.n:04d}",
            "source": f"iot.pm25.{street}.verify",
            "district": district,
            "street": street,
            "indicator": "iot.pm25",
            "value": round(20 + 30 * self.rng.random(), 1),
            "unit": "µg/m³",
            "event_time": t.isoformat(),
        }
        body.update(fields)
        return body

    def _record(
        self,
        t: datetime,
        label: str,
        expected: str | None,
        body: dict[str, Any],
        *,
        value: bytes | None = None,
        keyed: bool = True,
        pii: tuple[str, ...] = (),
        topic: str = IOT,
    ) -> Labelled:
        raw = orjson.dumps(body) if value is None else value
        record_key = body["district"].encode() if keyed else None
        return Labelled(topic, record_key, raw, t, label, expected, pii)

    # -- the regular set: rejected or scrubbed, never fatal -------------------------------
    def personal_data(self, t: datetime) -> Labelled:
        body = self._body(
            t,
            source="zhang.san@example.com",
            event_id="13812345678-0001",
            attributes={"13812345678": 1, "contact": 13812345678},
        )
        return self._record(t, "pii", None, body, pii=("13812345678", "zhang.san@example.com"))

    def personal_data_in_a_complaint(self, t: datetime) -> Labelled:
        body = self._body(
            t,
            source="li.si@example.org",
            event_id="13987654321-0002",
            indicator="hotline.complaints",
            value=1,
            unit="count",
            attributes={
                "li.si@example.org": "caller",
                "callback": 13987654321,
                "category": "noise",
            },
        )
        pii = ("13987654321", "li.si@example.org")
        return self._record(t, "pii-hotline", None, body, pii=pii, topic=HOTLINE)

    def duplicate_key(self, t: datetime) -> Labelled:
        body = self._body(t)
        raw = orjson.dumps(body)
        value = raw[:-1] + b',"value":' + orjson.dumps(body["value"] + 1.0) + b"}"
        return self._record(t, "duplicate_key", "duplicate_key", body, value=value)

    def too_old(self, t: datetime, when: datetime) -> Labelled:
        body = self._body(t, event_time=when.isoformat())
        return self._record(t, f"too_old {when.year:04d}", "too_old", body)

    def far_ahead(self, t: datetime) -> Labelled:
        ahead = datetime.now(UTC) + timedelta(seconds=250)
        body = self._body(t, event_time=ahead.isoformat())
        return self._record(t, "future +250 s", "future_event_time", body)

    def phone_as_street(self, t: datetime) -> Labelled:
        body = self._body(t, street="13912345678")
        return self._record(t, "phone street", "unknown_street", body, pii=("13912345678",))

    def tombstone(self, t: datetime) -> Labelled:
        body = self._body(t)
        return Labelled(IOT, body["district"].encode(), None, t, "tombstone", "bad_json")

    def keyless(self, t: datetime) -> Labelled:
        return self._record(t, "no key", "key_mismatch", self._body(t), keyed=False)

    # -- citizens' appeals: one counted with the writer's personal data, three refused ------
    def _appeal(
        self, t: datetime, label: str, expected: str | None, key: str | None = None, **fields: Any
    ) -> Labelled:
        """A 12345 work order at ``t`` about a smell in a seeded street, ``fields`` changed."""
        self.n += 1
        district, street = self._place()
        local = t.astimezone(ZoneInfo(self.cfg.city.city.timezone))
        payload: dict[str, Any] = {
            "order_no": f"GD-VERIFY-{self.n:04d}",
            "accepted_at": local.strftime("%Y-%m-%d %H:%M:%S"),
            "category": "臭味",
            "district_code": district,
            "street_code": street,
            "content": "小区门口一直有一股臭味，希望尽快处理。",
            "caller_name": "王建国",
            "caller_phone": "13711112222",
            "address": "新华路8号3单元502",
        }
        payload.update(fields)
        value = orjson.dumps({"channel": "hotline_12345", "payload": payload})
        pii = ("13711112222", "王建国", "新华路8号3单元502", "13655556666", "wang.jg@example.com")
        return Labelled(APPEALS_TOPIC, (key or district).encode(), value, t, label, expected, pii)

    def appeal_with_personal_data(self, t: datetime) -> Labelled:
        text = "垃圾站臭味熏天，太过分了！我是王建国，电话13655556666，邮箱wang.jg@example.com。"
        return self._appeal(t, "appeal pii", None, content=text)

    def appeal_of_another_district(self, t: datetime) -> Labelled:
        return self._appeal(t, "appeal keyed by another district", "key_mismatch", key="339999")

    def appeal_of_no_category(self, t: datetime) -> Labelled:
        return self._appeal(t, "appeal category unknown", "unknown_category", category="外星人")

    def appeal_without_its_text(self, t: datetime) -> Labelled:
        return self._appeal(t, "appeal without content", "schema", content=None)

    def regular(self) -> list[Callable[[datetime], Labelled]]:
        return [
            self.appeal_with_personal_data,
            self.appeal_of_another_district,
            self.appeal_of_no_category,
            self.appeal_without_its_text,
            self.personal_data,
            self.personal_data_in_a_complaint,
            self.duplicate_key,
            lambda t: self.too_old(t, datetime(1970, 1, 1, tzinfo=UTC)),
            lambda t: self.too_old(t, datetime(1, 1, 1, tzinfo=UTC)),
            self.far_ahead,
            self.phone_as_street,
            self.tombstone,
            self.keyless,
        ]

    # -- poison: may kill a worker ---------------------------------------------------
    def too_large(self, t: datetime, size: int) -> Labelled:
        body = self._body(t)
        pad = size - len(orjson.dumps(body)) - 30
        body["attributes"] = {"note": "x" * max(0, pad)}
        return self._record(t, f"too_large {size // 1000} KB", "too_large", body)

    def too_deep(self, t: datetime, depth: int = 300) -> Labelled:
        body = self._body(t)
        raw = orjson.dumps(body)
        # orjson refuses to write this depth: the nesting is spliced in as text
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        value = raw[:-1] + b',"attributes":' + nested + b"}"
        return self._record(t, f"nested {depth}", "too_deep", body, value=value)

    def poison(self) -> list[Callable[[datetime], Labelled]]:
        return [
            lambda t: self.too_large(t, 900_000),
            lambda t: self.too_large(t, 10_000_000),
            self.too_deep,
        ]


@dataclass
class Control:
    """What the driver and the fault script tell each other."""

    burst_started: asyncio.Event = field(default_factory=asyncio.Event)
    burst_done: asyncio.Event = field(default_factory=asyncio.Event)
    faults_done: asyncio.Event = field(default_factory=asyncio.Event)
    poison_sent_at: float | None = None
    produced: int = 0
    stream_time: datetime | None = None


class CityStream:
    """The simulated city with the hostile records inserted at seeded stream offsets.

    It runs past ``planned`` simulated time for as long as the driver keeps
    reading (the simulator's longer runs extend its shorter ones), and takes
    records to insert before the next simulated event (:meth:`insert`).
    """

    def __init__(
        self,
        cfg: CityConfig,
        seed: int,
        start: datetime,
        planned: timedelta,
        rng: random.Random,
        *,
        hostile_sets: int,
        malformed_share: float = 0.02,
    ) -> None:
        self.sim = CitySimulator(
            cfg, seed=seed, start=start, malformed_share=malformed_share, appeals=True
        )
        self.start = start
        self.planned = planned
        self.hostile = Hostile(cfg, rng)
        span = planned.total_seconds()
        plan: list[tuple[float, Callable[[datetime], Labelled]]] = []
        for i in range(hostile_sets):
            lo, hi = (
                span * (0.05 + 0.8 * i / hostile_sets),
                span * (0.05 + 0.8 * (i + 1) / hostile_sets),
            )
            plan += [(rng.uniform(lo, hi), build) for build in self.hostile.regular()]
        self._plan = sorted(plan, key=lambda p: p[0])
        self._inserts: list[Callable[[datetime], Labelled]] = []

    def insert(self, builders: list[Callable[[datetime], Labelled]]) -> None:
        self._inserts += builders

    def __iter__(self) -> Iterator[Labelled]:
        plan = list(self._plan)
        for ev in self.sim.events(timedelta(days=3650)):
            offset = (ev.event_time - self.start).total_seconds()
            while plan and plan[0][0] <= offset:
                yield plan.pop(0)[1](ev.event_time)
            while self._inserts:
                yield self._inserts.pop(0)(ev.event_time)
            label = "sim" if ev.malformed is None else f"sim {ev.malformed}"
            yield Labelled(ev.topic, ev.key, ev.value, ev.event_time, label, ev.malformed)


@dataclass
class FeedPlan:
    speed: float  # simulated seconds per wall second
    burst: tuple[float, float]  # stream offsets (s) produced at full speed
    tail_s: float  # wall seconds of input after the poison records
    max_extra: timedelta  # how far past the planned span to wait for the faults to end


async def feed(
    bootstrap: str,
    stream: CityStream,
    cfg: CityConfig,
    plan: FeedPlan,
    control: Control,
    produced: list[Produced],
    say: Callable[[str], None],
    appeals: AppealReplay,
) -> None:
    """Produce the stream, paced by event time; where each record landed goes to
    ``produced``, with what it must become (``appeals`` replays the citizens' appeals)."""
    loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=PRODUCER_MAX_REQUEST,
    )
    await producer.start()
    pending: list[tuple[Labelled, asyncio.Future[Any]]] = []

    async def settle() -> None:
        for rec, fut in pending:
            md = await fut
            if md.topic == APPEALS_TOPIC:
                origin = (md.topic, md.partition, md.offset)
                reading, place = appeals.expect(
                    origin, rec.key, rec.value, rec.expected, rec.stream_time
                )
            else:
                reading, place = expect(cfg, rec.value, rec.expected)
            produced.append(
                Produced(
                    md.topic,
                    md.partition,
                    md.offset,
                    rec.label,
                    rec.expected,
                    reading,
                    place,
                    rec.pii,
                )
            )
        pending.clear()

    wall0, t0 = loop.time(), stream.start
    bursting = False
    planned_end = stream.planned.total_seconds()
    try:
        for rec in stream:
            offset = (rec.stream_time - stream.start).total_seconds()
            in_burst = plan.burst[0] <= offset < plan.burst[1]
            if in_burst and not bursting:
                bursting = True
                control.burst_started.set()
                say(f"back-fill: {plan.burst[1] - plan.burst[0]:.0f} s of the stream at full speed")
            elif bursting and not in_burst:
                bursting = False
                control.burst_done.set()
                wall0, t0 = loop.time(), rec.stream_time
            if not bursting:
                due = wall0 + (rec.stream_time - t0).total_seconds() / plan.speed
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            if len(pending) % 500 == 499:
                await asyncio.sleep(0)
            ts = int(rec.stream_time.timestamp() * 1000)
            fut = await producer.send(rec.topic, rec.value, key=rec.key, timestamp_ms=ts)
            pending.append((rec, fut))
            control.produced += 1
            control.stream_time = rec.stream_time
            if len(pending) >= 2000:
                await settle()
            # past the planned span: the poison once the faults are over, then a tail
            past = offset >= planned_end
            overrun = offset >= planned_end + plan.max_extra.total_seconds()
            if (
                control.poison_sent_at is None
                and past
                and (control.faults_done.is_set() or overrun)
            ):
                stream.insert(stream.hostile.poison())
                control.poison_sent_at = loop.time()
                say("poison records (900 KB, 10 MB, nested 300 deep) follow")
            if (
                control.poison_sent_at is not None
                and loop.time() - control.poison_sent_at >= plan.tail_s
            ):
                break
        await producer.flush()
        await settle()
    finally:
        await producer.stop()
        control.burst_done.set()
