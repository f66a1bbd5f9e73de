"""The fault verifier's oracle: what the workers must have written, and the diff.

Pure logic, no Kafka, so the diffing is unit-tested (``tests/bench/test_verify.py``).
The driver (``bench/verify.py``) hands over every record it produced, with the
outcome the record must get, and every record the workers wrote on the output
topics. Everything expected is recomputed here from the produced input and the
city's configuration (units and conversions of ``config/indicators.yaml``, the
threshold rules and silences); nothing is read from the workers' metrics or
state.

- **Outcomes.** Each input record is either counted (one ``Reading`` on
  ``city.readings`` whose ``origin`` is the record) or dead-lettered with one
  reason (``city.deadletter``, matched by ``origin``).
- **Appeals.** A citizens' appeal's reading is what the worker's own appeal stage
  (:class:`AppealReplay`) makes of it: indicator and value by its emotion, and the
  earlier appeal of the same place and category it repeats (``repeat_of``). The
  repeat runs live in the districts' state, so a kill that lost or doubled them
  names another appeal here. Its tallies and sample go to its window
  (:func:`expected_facets`) for the public-opinion warnings.
- **Windows.** Every counted event adds 1 and its canonical value to the window
  (district, floor(event time, 60 s), indicator). On ``city.vitals`` the last
  record per (district, window start) must carry exactly those counts and sums
  (relative tolerance 1e-9).
- **Alerts.** The expected windows of each district, in window order, go
  through the worker's own detection (``DistrictDetection`` with the threshold
  rules and silences of the config), as ``cityvitals replay`` runs it. The
  events must be on ``city.emergency-command``, keyed by (alert id, sequence).
  This holds when no counted event was late: the sequence of closed windows is
  then the sorted list of minutes that had events, whenever the worker closed
  them.
- **Personal data.** No raw identifier of the records that carry some may appear
  in a reading, nor in a dead letter's ``detail``.

Outputs are at least once (a worker killed between sending its outputs and
writing its state sends them again) while counting is exactly once, so an output
repeated identically is a *repeat*, counted apart and never a difference. The
same identity written twice with different content (two reasons for one input,
two versions of one window or alert event) is a ``duplicated`` difference.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from streams.core.config import CityConfig

READINGS = "city.readings"
DEADLETTER = "city.deadletter"
VITALS = "city.vitals"
ALERTS = "city.emergency-command"
APPEALS = "city.events.appeals"
OUTPUT_TOPICS = (READINGS, DEADLETTER, VITALS, ALERTS)
WINDOW_S = 60
REL_TOL = 1e-9
STREET_SEP = "@"  # "<indicator>@<street>": a street's own aggregate, as the worker keeps it

Origin = tuple[str, int, int]  # (topic, partition, offset) of an input record
Agg = list[float]  # [count, sum, min, max], as streams.state.windows keeps them


@dataclass(frozen=True)
class ExpectedReading:
    """What a counted event must become: its place, indicator and canonical value."""

    district: str
    indicator: str
    street: str | None
    value: float
    event_time: float  # seconds since the epoch
    #: an appeal's: the earlier appeal it repeats, and its tallies and sample
    #: (:class:`streams.ingest.ingestor.Facets`)
    repeat_of: str | None = None
    facets: Any = None


@dataclass(frozen=True)
class Produced:
    """One input record as the broker stored it, and the outcome it must get.

    ``expected`` is None for a record that must be counted, else the dead-letter
    reason. ``place`` is (district, event time) as far as the bytes tell, for
    pointing window and alert differences at the inputs behind them.
    """

    topic: str
    partition: int
    offset: int
    label: str
    expected: str | None
    reading: ExpectedReading | None = None
    place: tuple[str, float] | None = None
    pii: tuple[str, ...] = ()

    @property
    def origin(self) -> Origin:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class OutputRecord:
    """One record the workers wrote on an output topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Difference:
    """One way the output departs from the oracle.

    ``kind``: ``missing`` (expected, not written), ``extra`` (written, not
    expected), ``duplicated`` (one identity written with different contents),
    ``differing`` (written with other contents than expected). ``check`` says
    which part of the oracle found it: ``outcome``, ``reading``, ``window``,
    ``alert``, ``pii`` or ``output``.
    """

    kind: str
    check: str
    topic: str
    identity: str
    expected: Any
    actual: Any
    note: str = ""

    @property
    def cls(self) -> str:
        """The class it is counted in: check and kind, for outcomes expected -> actual."""
        if self.check == "outcome":
            return f"outcome/{self.kind}: {self.expected} -> {self.actual}"
        return f"{self.check}/{self.kind}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v != ""}


@dataclass
class Verdict:
    differences: list[Difference] = field(default_factory=list)
    repeats: Counter[str] = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)

    def classes(self) -> Counter[str]:
        """Differences by check, kind and, for outcomes, expected -> actual."""
        return Counter(d.cls for d in self.differences)

    def examples(self, per_class: int = 2) -> dict[str, list[str]]:
        """The first differences of each class: identity, and the note if any."""
        out: dict[str, list[str]] = {}
        for d in self.differences:
            shown = out.setdefault(d.cls, [])
            if len(shown) < per_class:
                shown.append(f"{d.identity} ({d.note})" if d.note else d.identity)
        return out


# --- the input side -------------------------------------------------------------------


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def canonical_value(cfg: CityConfig, indicator: str, value: float, unit: str) -> float | None:
    """The value in the indicator's canonical unit, from the conversions of
    ``indicators.yaml`` (canonical = value x factor + offset); None for another unit."""
    ind = cfg.indicators[indicator]
    if unit == ind.unit:
        return float(value)
    conv = ind.conversions.get(unit)
    if conv is None:
        return None
    return value * conv.factor + conv.offset


def expect(
    cfg: CityConfig, value: bytes | None, expected: str | None
) -> tuple[ExpectedReading | None, tuple[str, float] | None]:
    """The reading a counted record must give (None for a rejected one), and the
    record's (district, event time) where its bytes tell them."""
    if value is None or len(value) > 2_000_000:
        return None, None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    district, when = doc.get("district"), _timestamp(doc.get("event_time"))
    place = (district, when) if isinstance(district, str) and when is not None else None
    if expected is not None:
        return None, place
    if place is None:
        raise ValueError(f"a record to be counted has no district or event time: {value[:200]!r}")
    canonical = canonical_value(cfg, doc["indicator"], doc["value"], doc["unit"])
    if canonical is None:
        raise ValueError(f"a record to be counted has a unit the city does not accept: {doc}")
    reading = ExpectedReading(place[0], doc["indicator"], doc.get("street"), canonical, place[1])
    return reading, place


class AppealReplay:
    """What each citizens' appeal must become, from the worker's own appeal stage run over
    the produced appeals in the order produced: de-identification with the workers' key,
    the emotion, and the repeat runs, which live in each district's state and so must
    survive every kill exactly once. A district's appeals sit on one partition, which the
    worker reads in order, so the runs see the same appeals in the same order here."""

    def __init__(self, cfg: CityConfig, deid_key: bytes) -> None:
        from streams.ingest.deid import Deidentifier
        from streams.ingest.ingestor import Ingestor
        from streams.voice.appeals import load_appeals
        from streams.voice.ingest import AppealStage

        self.stage = AppealStage(Ingestor(cfg, Deidentifier(deid_key)), load_appeals(cfg))

    def expect(
        self,
        origin: Origin,
        key: bytes | None,
        value: bytes | None,
        expected: str | None,
        when: datetime,
    ) -> tuple[ExpectedReading | None, tuple[str, float] | None]:
        """As :func:`expect`, for an appeal produced at stream time ``when`` (the worker's
        clock checks see it within their bounds)."""
        from streams.ingest.ingestor import Accepted

        if value is None:
            return None, None
        got = self.stage.ingest.accept(*origin, key, value, when)
        if not isinstance(got, Accepted):
            if expected is None:
                raise ValueError(f"an appeal to be counted is rejected: {got.reason} {got.detail}")
            return None, None
        doc = orjson.loads(got.json)
        place = (doc["district"], got.t)
        if expected is not None:
            return None, place
        repeat_of = doc["attributes"].get("repeat_of")
        reading = ExpectedReading(
            place[0], got.indicator, got.street, got.value, got.t, repeat_of, got.facets
        )
        return reading, place


def window_of(t: float) -> float:
    return t - (t % WINDOW_S)


def expected_windows(
    produced: Iterable[Produced], street_indicators: frozenset[str] = frozenset()
) -> dict[str, dict[float, dict[str, Agg]]]:
    """district -> window start -> indicator (and ``indicator@street`` for the
    indicators street rules watch) -> [count, sum, min, max], from the counted records.

    Records are taken in the order given (the order they were produced). All
    events of one district and indicator sit on one partition of one topic and
    the worker adds them in offset order, so the sums add in the same order.
    """
    out: dict[str, dict[float, dict[str, Agg]]] = defaultdict(dict)
    for rec in produced:
        r = rec.reading
        if rec.expected is not None or r is None:
            continue
        bucket = out[r.district].setdefault(window_of(r.event_time), {})
        keys = [r.indicator]
        if r.street is not None and r.indicator in street_indicators:
            keys.append(f"{r.indicator}{STREET_SEP}{r.street}")
        for key in keys:
            agg = bucket.get(key)
            if agg is None:
                bucket[key] = [1, r.value, r.value, r.value]
            else:
                agg[0] += 1
                agg[1] += r.value
                agg[2] = min(agg[2], r.value)
                agg[3] = max(agg[3], r.value)
    return dict(out)


def expected_facets(
    produced: Iterable[Produced],
) -> tuple[dict[tuple[str, float], dict[str, list[float]]], dict[tuple[str, float], Any]]:
    """(district, window start) -> facet -> the tally of the counted appeals (each of
    :data:`~streams.ingest.ingestor.APPEAL_TALLY` summed in the order produced, as the
    worker adds a partition's records in offset order), and -> the angriest samples of its
    narrowest facet, kept as the worker's windows keep them."""
    from streams.state.windows import keep_sample

    tallies: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(dict)
    samples: dict[tuple[str, float], Any] = defaultdict(dict)
    for rec in produced:
        r = rec.reading
        if rec.expected is not None or r is None or r.facets is None or not r.facets.keys:
            continue
        window = (r.district, window_of(r.event_time))
        bucket = tallies[window]
        for facet in r.facets.keys:
            row = bucket.get(facet)
            counts = r.facets.counts
            bucket[facet] = (
                list(counts) if row is None else [a + b for a, b in zip(row, counts, strict=True)]
            )
        if r.facets.sample is not None:
            kept = samples[window].setdefault(r.facets.keys[-1], [])
            keep_sample(kept, r.facets.rank, r.facets.sample)
    return dict(tallies), dict(samples)


def expected_alerts(
    cfg: CityConfig,
    windows: Mapping[str, Mapping[float, Mapping[str, Agg]]],
    ctx: Any,
    produced: Iterable[Produced] = (),
) -> list[dict[str, Any]]:
    """Each district's expected windows, in order, through the worker's detection
    (``ctx``: a :class:`streams.alerting.detection.DetectionContext`); the alert events as JSON.

    The counted readings of indicators that early rules watch go to detection first,
    in the order produced (each series sits on one partition, which the worker reads
    in order), to be judged in the canonical order of :mod:`streams.alerting.early` as the
    windows close.
    """
    from streams.alerting.detection import DistrictDetection
    from streams.state.windows import ClosedWindow

    detections: dict[str, DistrictDetection] = {}
    # (district, window key) -> minute -> [count, sum] of the readings counted so far
    running: dict[tuple[str, str], dict[float, list[float]]] = {}
    for rec in produced:
        r = rec.reading
        if rec.expected is not None or r is None or r.indicator not in ctx.early_indicators:
            continue
        detection = detections.get(r.district)
        if detection is None:
            detection = detections[r.district] = DistrictDetection(r.district)
        ref = f"{rec.topic}:{rec.partition}:{rec.offset}"
        totals = None
        if r.indicator in ctx.running_indicators:
            # nothing closes here: every minute so far is "open", its total as it stands
            start = r.event_time - r.event_time % WINDOW_S
            totals = {}
            for key in ctx.partial_keys(r.indicator, r.street):
                minutes = running.setdefault((r.district, key), {})
                agg = minutes.setdefault(start, [0.0, 0.0])
                agg[0] += 1
                agg[1] += r.value
                totals[key] = tuple((m, c, s) for m, (c, s) in minutes.items())
        detection.on_reading(
            r.indicator, r.street, r.event_time, r.value, ref, ctx, None, float(WINDOW_S), totals
        )
    tallies, samples = expected_facets(produced)
    docs: list[dict[str, Any]] = []
    for district in sorted(windows):
        detection = detections.get(district) or DistrictDetection(district)
        for start in sorted(windows[district]):
            minute = {k: list(v) for k, v in windows[district][start].items()}
            window = ClosedWindow(
                district,
                start,
                start + WINDOW_S,
                minute,
                {},
                tallies.get((district, start), {}),
                samples.get((district, start), {}),
            )
            docs += [orjson.loads(e.to_json()) for e in detection.on_window(window, ctx)]
    return docs


def detection_context(cfg: CityConfig) -> Any:
    """The detection the worker builds from the config: rules, silences, models."""
    from streams.alerting.detection import DetectionContext
    from streams.alerting.rules import load_silences, load_thresholds
    from streams.kafka.worker import opinion_categories
    from streams.voice.appeals import load_appeals

    rules = load_thresholds(cfg)
    return DetectionContext(
        cfg,
        rules,
        silences=load_silences(cfg, rules),
        opinion_categories=opinion_categories(load_appeals(cfg)),
    )


# --- comparisons ----------------------------------------------------------------------


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats compared at the relative tolerance."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and close(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _origin_of(doc: Mapping[str, Any]) -> Origin | None:
    o = doc.get("origin")
    if not isinstance(o, dict):
        return None
    try:
        return (str(o["topic"]), int(o["partition"]), int(o["offset"]))
    except (KeyError, TypeError, ValueError):
        return None


def _name(origin: Origin) -> str:
    return f"{origin[0]}:{origin[1]}@{origin[2]}"


def _stamp(t: float) -> str:
    try:
        return datetime.fromtimestamp(t).astimezone().isoformat()
    except (OverflowError, OSError, ValueError):
        return repr(t)


def reading_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "district": doc.get("district"),
        "indicator": doc.get("indicator"),
        "street": doc.get("street"),
        "value": doc.get("value"),
        "event_time": _timestamp(doc.get("event_time")),
        "repeat_of": (doc.get("attributes") or {}).get("repeat_of"),
    }


def expected_reading_view(r: ExpectedReading) -> dict[str, Any]:
    return {
        "district": r.district,
        "indicator": r.indicator,
        "street": r.street,
        "value": r.value,
        "event_time": r.event_time,
        "repeat_of": r.repeat_of,
    }


def vitals_view(doc: Mapping[str, Any]) -> dict[str, list[Any]]:
    """indicator -> [count, sum] of the closed minute, for indicators that had one."""
    out: dict[str, list[Any]] = {}
    for code, ind in (doc.get("indicators") or {}).items():
        minute = ind.get("minute") if isinstance(ind, dict) else None
        if isinstance(minute, dict):
            out[code] = [minute.get("count"), minute.get("sum")]
    return out


ALERT_FIELDS = ("status", "grade", "kind", "district", "street", "indicators")


def alert_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    evidence = doc.get("evidence") or {}
    view = {f: doc.get(f) for f in ALERT_FIELDS}
    view["rule"] = evidence.get("rule")
    view["observed"] = evidence.get("observed")
    view["event_time"] = _timestamp(doc.get("event_time"))
    view["inhibited_by"] = doc.get("inhibited_by")
    view["silenced_by"] = doc.get("silenced_by")
    return view


def _changed(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    keys = sorted(set(expected) | set(actual))
    return {
        k: [expected.get(k), actual.get(k)]
        for k in keys
        if not _same(expected.get(k), actual.get(k))
    }


# --- the diff -----------------------------------------------------------------------------


@dataclass
class Observed:
    """The output topics, parsed and grouped by identity (each list in offset order)."""

    readings: dict[Origin, list[tuple[dict[str, Any], bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    deadletters: dict[Origin, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    vitals: dict[tuple[str, float], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    alerts: dict[tuple[str, int], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    unreadable: list[tuple[OutputRecord, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def observe(records: Iterable[OutputRecord]) -> Observed:
    obs = Observed()
    for rec in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        obs.counts[rec.topic] += 1
        try:
            doc = orjson.loads(rec.value) if rec.value is not None else None
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            obs.unreadable.append((rec, "not a JSON object"))
            continue
        if rec.topic == READINGS:
            origin = _origin_of(doc)
            if origin is None:
                obs.unreadable.append((rec, "a reading without an origin"))
            else:
                obs.readings[origin].append((doc, rec.value or b""))
        elif rec.topic == DEADLETTER:
            origin = _origin_of(doc)
            if origin is None:
                obs.unreadable.append((rec, "a dead letter without an origin"))
            else:
                obs.deadletters[origin].append(doc)
        elif rec.topic == VITALS:
            start = _timestamp(doc.get("window_start"))
            if start is None or not isinstance(doc.get("district"), str):
                obs.unreadable.append((rec, "vitals without a district or window start"))
            else:
                obs.vitals[(doc["district"], start)].append(doc)
        elif rec.topic == ALERTS:
            alert_id, seq = doc.get("alert_id"), doc.get("sequence")
            if not isinstance(alert_id, str) or not isinstance(seq, int):
                obs.unreadable.append((rec, "an alert event without alert_id or sequence"))
            else:
                obs.alerts[(alert_id, seq)].append(doc)
    return obs


def _outcome_name(reason: str | None) -> str:
    return "counted" if reason is None else f"dead letter {reason}"


def _diff_outcomes(
    produced: Sequence[Produced], obs: Observed, verdict: Verdict
) -> Counter[tuple[str, float]]:
    """One reading or one dead-letter reason per input, the reading's values, and no
    raw personal data downstream. Returns, per (district, window), how many inputs
    got a wrong outcome: they explain window differences."""
    diffs = verdict.differences
    wrong_inputs: Counter[tuple[str, float]] = Counter()
    pii_tokens = sorted({t for p in produced for t in p.pii})
    for p in produced:
        origin, name, note = p.origin, _name(p.origin), p.label
        got_readings = obs.readings.get(origin, [])
        got_dead = obs.deadletters.get(origin, [])
        reasons = list(dict.fromkeys(str(d.get("reason")) for d in got_dead))
        outcomes = (["counted"] if got_readings else []) + [_outcome_name(r) for r in reasons]
        want = _outcome_name(p.expected)
        if got_dead and outcomes != [want]:  # what the worker said, for the reader
            first = next(d for d in got_dead if _outcome_name(str(d.get("reason"))) != want)
            stage = f" at {first['stage']}" if first.get("stage") else ""
            note = f"{p.label}; {first.get('reason')}{stage}: {str(first.get('detail'))[:240]}"
        if not outcomes:
            diffs.append(Difference("missing", "outcome", p.topic, name, want, "nothing", note))
        elif len(outcomes) > 1:
            got = " + ".join(outcomes)
            diffs.append(Difference("duplicated", "outcome", p.topic, name, want, got, note))
        elif outcomes[0] != want:
            diffs.append(Difference("differing", "outcome", p.topic, name, want, outcomes[0], note))
        else:  # the expected outcome: more than one record of it are at-least-once repeats
            verdict.repeats[READINGS] += max(0, len(got_readings) - 1)
            verdict.repeats[DEADLETTER] += max(0, len(got_dead) - 1)
        if outcomes != [want] and p.place is not None:
            wrong_inputs[(p.place[0], window_of(p.place[1]))] += 1
        if p.expected is None and p.reading is not None and got_readings:
            want_view = expected_reading_view(p.reading)
            changed = _changed(want_view, reading_view(got_readings[-1][0]))
            if changed:
                diffs.append(
                    Difference("differing", "reading", READINGS, name, want_view, changed, note)
                )
        leaked = sorted({t for _, raw in got_readings for t in pii_tokens if t.encode() in raw})
        if leaked:
            diffs.append(
                Difference("differing", "pii", READINGS, name, "no raw personal data", leaked, note)
            )
        details = " ".join(str(d.get("detail", "")) for d in got_dead)
        leaked = sorted(t for t in pii_tokens if t in details)
        if leaked:
            diffs.append(
                Difference(
                    "differing",
                    "pii",
                    DEADLETTER,
                    name,
                    "no raw personal data in detail",
                    leaked,
                    note,
                )
            )
    known = {p.origin for p in produced}
    for topic, groups in ((READINGS, obs.readings), (DEADLETTER, obs.deadletters)):
        for origin, written in groups.items():
            if origin not in known:
                diffs.append(
                    Difference(
                        "extra", "outcome", topic, _name(origin), "no such input", len(written)
                    )
                )
    return wrong_inputs


def _diff_windows(
    expected: Mapping[tuple[str, float], dict[str, list[Any]]],
    obs: Observed,
    wrong_inputs: Counter[tuple[str, float]],
    verdict: Verdict,
) -> dict[str, float]:
    """The last vitals record of each (district, window) against the expected counts
    and sums; returns the start of each district's first differing window."""
    first_diff: dict[str, float] = {}
    for key in sorted(set(expected) | set(obs.vitals)):
        identity = f"{key[0]} {_stamp(key[1])}"
        n = wrong_inputs[key]
        note = f"{n} inputs of this window got a wrong outcome" if n else ""
        views = [vitals_view(d) for d in obs.vitals.get(key, [])]
        found: list[Difference] = []
        if len(views) > 1:
            if all(_same(v, views[-1]) for v in views):
                verdict.repeats[VITALS] += len(views) - 1
            else:
                found.append(
                    Difference("duplicated", "window", VITALS, identity, "one version", views, note)
                )
        want = expected.get(key)
        if want is None:
            found.append(Difference("extra", "window", VITALS, identity, None, views[-1], note))
        elif not views:
            found.append(Difference("missing", "window", VITALS, identity, want, None, note))
        else:
            changed = _changed(want, views[-1])
            if changed:
                found.append(
                    Difference("differing", "window", VITALS, identity, want, changed, note)
                )
        if found:
            verdict.differences.extend(found)
            first_diff[key[0]] = min(first_diff.get(key[0], math.inf), key[1])
    return first_diff


def _diff_alerts(
    expected_events: Sequence[Mapping[str, Any]],
    obs: Observed,
    first_window_diff: Mapping[str, float],
    verdict: Verdict,
) -> None:
    """Alert events keyed by (alert id, sequence): the compared fields of the last one
    written against the replayed one."""
    want_alerts = {(e["alert_id"], e["sequence"]): alert_view(e) for e in expected_events}
    for key in sorted(set(want_alerts) | set(obs.alerts)):
        identity = f"{key[0]}#{key[1]}"
        views = [alert_view(d) for d in obs.alerts.get(key, [])]
        want = want_alerts.get(key)
        shown = views[-1] if views else want or {}
        district, at = shown.get("district") or "", shown.get("event_time") or math.inf
        after = first_window_diff.get(district, math.inf) <= at
        note = "after a window difference in its district" if after else ""
        if len(views) > 1:
            if all(_same(v, views[-1]) for v in views):
                verdict.repeats[ALERTS] += len(views) - 1
            else:
                verdict.differences.append(
                    Difference("duplicated", "alert", ALERTS, identity, "one version", views, note)
                )
        if want is None:
            verdict.differences.append(
                Difference("extra", "alert", ALERTS, identity, None, views[-1], note)
            )
        elif not views:
            verdict.differences.append(
                Difference("missing", "alert", ALERTS, identity, want, None, note)
            )
        else:
            changed = _changed(want, views[-1])
            if changed:
                verdict.differences.append(
                    Difference("differing", "alert", ALERTS, identity, want, changed, note)
                )


def verify(
    produced: Sequence[Produced],
    outputs: Iterable[OutputRecord],
    cfg: CityConfig,
    *,
    ctx: Any = None,
    alerts: bool = True,
) -> Verdict:
    """Every expected output against what was written; see the module docstring.

    ``ctx`` is the detection context (built from ``cfg`` when None); ``alerts=False``
    leaves the alert replay out (and with it the street aggregates it needs).
    """
    verdict = Verdict()
    obs = observe(outputs)
    for rec, why in obs.unreadable:
        verdict.differences.append(
            Difference("extra", "output", rec.topic, f"{rec.partition}@{rec.offset}", None, why)
        )
    wrong_inputs = _diff_outcomes(produced, obs, verdict)
    if alerts and ctx is None:
        ctx = detection_context(cfg)
    street_indicators: frozenset[str] = ctx.street_indicators if alerts else frozenset()
    windows = expected_windows(produced, street_indicators)
    expected_vitals = {
        (district, start): {k: [a[0], a[1]] for k, a in minute.items() if STREET_SEP not in k}
        for district, starts in windows.items()
        for start, minute in starts.items()
    }
    first_window_diff = _diff_windows(expected_vitals, obs, wrong_inputs, verdict)
    expected_events = expected_alerts(cfg, windows, ctx, produced) if alerts else []
    if alerts:
        _diff_alerts(expected_events, obs, first_window_diff, verdict)
    verdict.stats = {
        "inputs": len(produced),
        "expected_counted": sum(p.expected is None for p in produced),
        "expected_deadletters": dict(
            sorted(Counter(p.expected for p in produced if p.expected is not None).items())
        ),
        "expected_windows": len(expected_vitals),
        "expected_alert_events": len(expected_events),
        "expected_alert_events_by_kind": dict(
            sorted(Counter(str(e.get("kind")) for e in expected_events).items())
        ),
        "appeals": sum(p.topic == APPEALS for p in produced),
        "appeal_repeats": sum(
            p.reading is not None and p.reading.repeat_of is not None for p in produced
        ),
        "written": dict(sorted(obs.counts.items())),
        "written_deadletter_reasons": dict(
            sorted(
                Counter(str(d.get("reason")) for ds in obs.deadletters.values() for d in ds).items()
            )
        ),
    }
    return verdict
