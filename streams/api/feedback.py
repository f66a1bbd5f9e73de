"""Appeal feedback by category to the departments that own them.

Departments deal first with the appeals most likely to drive citizens to extreme
emotion: each sees its categories ranked by the share of extreme-emotion appeals and by
volume, with the trend against the span before, the open appeal clusters it owns (the
``public_opinion`` alerts), and its performance on them. A daily report puts the same
figures for one day of the city's calendar together.

- **Data.** The worker publishes each closed window's appeal tallies per category and
  street on ``city.appeal-tallies`` (:class:`~streams.core.messages.AppealTallies`).
  :class:`AppealLedger` sums them into hourly buckets per district and category and per
  street and category, kept for :data:`LEDGER_DAYS` days. A dict of buckets, scanned per
  question, with no index to keep up to date: eight days of the demo city's 10
  districts, each window with 3 categories in 2 streets, hold 102,824 buckets under 560
  keys; a window is taken in 22 µs, and ranking every category of the city over 24 hours
  takes 10.7 ms, one department's 2.1 ms (median of 7 rankings of a ledger so filled).
- **Time.** Spans are in event time and end, unless asked otherwise, at the end of the
  newest window the ledger holds, so a city whose event time runs behind the clock (a
  backlog, the demo) still sees its last day.
- **Repeats.** A window published again (a worker reprocessing after a crash, read with
  its first copy) is taken once: per district, windows are taken in event-time order
  and one not after the last taken is skipped.
- **Clusters and performance.** A cluster is a ``public_opinion`` alert. *Handled*:
  resolved by an action (not by the appeals dying down); time to handle: from its first
  event to that action; *appeals handled*: the appeals of its window at its peak (the
  sum of its evidence's minutes); *repeats after handling*: the share of appeals about
  its place and category in the :data:`AFTER_HANDLING_S` after it was handled that
  repeat an earlier appeal. *Re-routed away*: alerts the department passed to another
  (a ``reroute`` action while it owned them).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streams.alerting.lifecycle import is_closed
from streams.core.messages import (
    AlertActionType,
    AlertEvent,
    AlertKind,
    AppealTallies,
    Workflow,
)

HOUR = 3600
#: Days of hourly tallies the ledger keeps: a week's trend and the day before it.
LEDGER_DAYS = 8
#: After a cluster is handled, how long its place's appeals count as "after handling".
AFTER_HANDLING_S = 24 * HOUR
#: A category is ranked by its extreme share only from this many appeals in the span;
#: below, one angry appeal of one would top the list. Fewer follow, ranked by volume.
MIN_RANKED = 5
#: What a bucket counts, in order (an :class:`~streams.core.messages.AppealTally`).
FIELDS = ("appeals", "extreme", "rated", "bad", "repeats")
_APPEALS, _EXTREME, _RATED, _BAD, _REPEATS = range(len(FIELDS))
#: The street of a district-wide bucket's key.
WHOLE_DISTRICT = ""

Bucket = list[int]


def _add(bucket: Bucket | None, tally: Any) -> Bucket:
    row = [getattr(tally, name) for name in FIELDS]
    return row if bucket is None else [a + b for a, b in zip(bucket, row, strict=True)]


@dataclass
class AppealLedger:
    """Hourly appeal tallies per (district, street, category); see the module docstring."""

    keep_s: float = LEDGER_DAYS * 86400.0
    #: (district, street or "", category) -> hour start -> bucket
    buckets: dict[tuple[str, str, str], dict[int, Bucket]] = field(default_factory=dict)
    #: district -> start of the newest window taken
    last_window: dict[str, float] = field(default_factory=dict)
    #: end of the newest window taken (event time); None before the first
    latest: float | None = None
    _oldest_hour: int | None = None

    def add(self, tallies: AppealTallies) -> bool:
        """Take one window's tallies; False when it repeats (or precedes) one taken."""
        start = tallies.window_start.timestamp()
        if start <= self.last_window.get(tallies.district, float("-inf")):
            return False
        self.last_window[tallies.district] = start
        hour = int(start // HOUR * HOUR)
        for category, tally in tallies.categories.items():
            hours = self.buckets.setdefault((tallies.district, WHOLE_DISTRICT, category), {})
            hours[hour] = _add(hours.get(hour), tally)
        for street, categories in tallies.streets.items():
            for category, tally in categories.items():
                hours = self.buckets.setdefault((tallies.district, street, category), {})
                hours[hour] = _add(hours.get(hour), tally)
        end = tallies.window_end.timestamp()
        self.latest = end if self.latest is None else max(self.latest, end)
        self._evict()
        return True

    def _evict(self) -> None:
        """Drop hours older than ``keep_s`` before the newest window: a walk of every key
        once an hour of event time, not per window."""
        assert self.latest is not None
        horizon = int((self.latest - self.keep_s) // HOUR * HOUR)
        if self._oldest_hour is not None and self._oldest_hour >= horizon:
            return
        for key in list(self.buckets):
            hours = self.buckets[key]
            for hour in [h for h in hours if h < horizon]:
                del hours[hour]
            if not hours:
                del self.buckets[key]
        self._oldest_hour = horizon

    def sums(
        self,
        start: float,
        end: float,
        categories: Iterable[str],
        districts: Iterable[str] | None = None,
        street: str = WHOLE_DISTRICT,
    ) -> dict[str, Bucket]:
        """Per category, the tallies of the hours that start in ``[start, end)``."""
        wanted = set(categories)
        places = None if districts is None else set(districts)
        out: dict[str, Bucket] = {}
        for (district, at, category), hours in self.buckets.items():
            if at != street or category not in wanted:
                continue
            if places is not None and district not in places:
                continue
            row = out.setdefault(category, [0] * len(FIELDS))
            for hour, bucket in hours.items():
                if start <= hour < end:
                    for i, v in enumerate(bucket):
                        row[i] += v
        return out

    def hourly(
        self, start: float, end: float, category: str, districts: Iterable[str] | None = None
    ) -> list[int]:
        """Appeals of one category per hour from ``start`` (an hour's start) to ``end``."""
        places = None if districts is None else set(districts)
        counts = [0] * max(0, int((end - start) // HOUR))
        for (district, street, cat), hours in self.buckets.items():
            if cat != category or street != WHOLE_DISTRICT:
                continue
            if places is not None and district not in places:
                continue
            for hour, bucket in hours.items():
                i = int((hour - start) // HOUR)
                if 0 <= i < len(counts):
                    counts[i] += bucket[_APPEALS]
        return counts

    def place(
        self, district: str, street: str | None, category: str, start: float, end: float
    ) -> Bucket:
        """The tallies of one place (a street, or a whole district) and category."""
        hours = self.buckets.get((district, street or WHOLE_DISTRICT, category), {})
        row = [0] * len(FIELDS)
        for hour, bucket in hours.items():
            if start <= hour < end:
                for i, v in enumerate(bucket):
                    row[i] += v
        return row


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _figures(row: Bucket) -> dict[str, Any]:
    return {
        "appeals": row[_APPEALS],
        "extreme": row[_EXTREME],
        "extreme_share": _share(row[_EXTREME], row[_APPEALS]),
        "rated": row[_RATED],
        "bad": row[_BAD],
        "bad_rate": _share(row[_BAD], row[_RATED]),
        "repeats": row[_REPEATS],
        "repeat_share": _share(row[_REPEATS], row[_APPEALS]),
    }


@dataclass(frozen=True)
class CategoryInfo:
    """A category of the appeals catalogue as feedback names it."""

    code: str
    name_zh: str
    name_en: str
    department: str
    co_departments: tuple[str, ...]


def span_end(ledger: AppealLedger, at: datetime | None) -> float:
    """The end of a span: ``at``, else the end of the hour of the newest window taken."""
    if at is not None:
        return at.timestamp()
    if ledger.latest is None:
        return 0.0
    return float(-(-ledger.latest // HOUR) * HOUR)


def ranked_categories(
    ledger: AppealLedger,
    categories: Iterable[CategoryInfo],
    end: float,
    hours: int,
    districts: Iterable[str] | None = None,
    clusters: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Categories over the ``hours`` before ``end``, most extreme first.

    Ranked by extreme-emotion share among those with at least :data:`MIN_RANKED` appeals,
    then by volume (appeals, then extreme appeals); each with the same figures over
    the span before (``previous``), the change (``trend``) and its appeals per hour.
    """
    infos = {c.code: c for c in categories}
    span = hours * HOUR
    start = end - span
    zone = None if districts is None else list(districts)
    now = ledger.sums(start, end, infos, zone)
    before = ledger.sums(start - span, start, infos, zone)
    rows = []
    for code, info in infos.items():
        current = _figures(now.get(code, [0] * len(FIELDS)))
        previous = _figures(before.get(code, [0] * len(FIELDS)))
        share, was = current["extreme_share"], previous["extreme_share"]
        rows.append(
            {
                "category": code,
                "name_zh": info.name_zh,
                "name_en": info.name_en,
                "department": info.department,
                "co_departments": list(info.co_departments),
                **current,
                "previous": previous,
                "trend": {
                    "appeals_change": (
                        round((current["appeals"] - previous["appeals"]) / previous["appeals"], 4)
                        if previous["appeals"]
                        else None
                    ),
                    "extreme_share_change": (
                        round(share - was, 4) if share is not None and was is not None else None
                    ),
                },
                "hourly": ledger.hourly(start, end, code, zone),
                "open_clusters": (clusters or {}).get(code, 0),
            }
        )

    def order(row: dict[str, Any]) -> tuple[int, float, int, int]:
        ranked = row["appeals"] >= MIN_RANKED
        return (
            0 if ranked else 1,
            -(row["extreme_share"] or 0.0) if ranked else 0.0,
            -row["appeals"],
            -row["extreme"],
        )

    rows.sort(key=order)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def is_cluster(alert: AlertEvent) -> bool:
    return alert.kind is AlertKind.PUBLIC_OPINION


def _handled_at(alert: AlertEvent) -> datetime | None:
    return next(
        (a.at for a in alert.actions if a.action == AlertActionType.RESOLVE.value),
        None,
    )


def cluster_appeals(timeline: Iterable[AlertEvent]) -> int:
    """The appeals of a cluster's window at its peak: the largest sum of its evidence's
    minutes over its events."""
    return int(max((sum(p.value for p in e.evidence.values) for e in timeline), default=0))


def cluster_doc(alert: AlertEvent, timeline: list[AlertEvent]) -> dict[str, Any]:
    handled = _handled_at(alert)
    return {
        "alert_id": alert.alert_id,
        "category": alert.evidence.category,
        "district": alert.district,
        "street": alert.street,
        "streets": alert.evidence.streets,  # a district's cluster in several streets
        "grade": alert.grade.name,
        "colour": alert.colour,
        "headline_zh": alert.headline_zh,
        "headline_en": alert.headline_en,
        "department": alert.department,
        "co_departments": alert.co_departments,
        "workflow": alert.workflow.value,
        "status": alert.status.value,
        "open": not is_closed(alert),
        "first_seen": alert.first_seen,
        "last_update": alert.last_update,
        "appeals": cluster_appeals(timeline),
        "handled_at": handled,
        "handle_s": None if handled is None else (handled - alert.first_seen).total_seconds(),
    }


def rerouted_from(timeline: list[AlertEvent], department: str) -> list[dict[str, Any]]:
    """Each time ``department`` re-routed this alert to another: when, to whom and why
    (the event a re-route caused carries its record, with the note, last)."""
    out = []
    owner: str | None = None
    for event in timeline:
        record = event.actions[-1] if event.actions else None
        moved = owner == department and event.department != department
        if moved and record is not None and record.action == AlertActionType.REROUTE.value:
            out.append(
                {
                    "alert_id": event.alert_id,
                    "category": event.evidence.category,
                    "district": event.district,
                    "street": event.street,
                    "headline_zh": event.headline_zh,
                    "headline_en": event.headline_en,
                    "at": record.at,
                    "by": record.actor,
                    "to": event.department,
                    "reason": record.note,
                }
            )
        owner = event.department
    return out


def performance(
    clusters: Iterable[tuple[AlertEvent, list[AlertEvent]]],
    ledger: AppealLedger,
    rerouted_away: int,
) -> dict[str, Any]:
    """A department's performance on its appeal clusters (see the module docstring)."""
    total = handled = appeals = 0
    times: list[float] = []
    after = [0] * len(FIELDS)
    for alert, timeline in clusters:
        total += 1
        at = _handled_at(alert)
        if at is None or alert.workflow is not Workflow.RESOLVED:
            continue
        handled += 1
        appeals += cluster_appeals(timeline)
        times.append(max(0.0, (at - alert.first_seen).total_seconds()))
        if alert.evidence.category is not None:
            begin = at.timestamp()
            # the hour the cluster was handled in counts from its next hour on: buckets are
            # hourly, and the hour's earlier appeals were the cluster's own
            first = (begin // HOUR + 1) * HOUR
            row = ledger.place(
                alert.district,
                alert.street,
                alert.evidence.category,
                first,
                begin + AFTER_HANDLING_S,
            )
            after = [a + b for a, b in zip(after, row, strict=True)]
    return {
        "clusters": total,
        "handled": handled,
        "rerouted_away": rerouted_away,
        "appeals_handled": appeals,
        "median_handle_s": statistics.median(times) if times else None,
        "appeals_after_handling": after[_APPEALS],
        "repeats_after_handling": after[_REPEATS],
        "repeat_share_after_handling": _share(after[_REPEATS], after[_APPEALS]),
    }


def local_day(day: str, timezone: str) -> tuple[datetime, datetime]:
    """The start and end of a calendar day (``YYYY-MM-DD``) in the city's time zone;
    ValueError for anything else."""
    date = datetime.strptime(day, "%Y-%m-%d").date()
    zone = ZoneInfo(timezone)
    start = datetime(date.year, date.month, date.day, tzinfo=zone)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def day_of(at: float, timezone: str) -> str:
    """The calendar day (``YYYY-MM-DD``) of a moment in the city's time zone."""
    return datetime.fromtimestamp(at, ZoneInfo(timezone)).strftime("%Y-%m-%d")


def department_clusters(
    alerts: Iterable[AlertEvent],
    timeline_of: Callable[[str], list[AlertEvent]],
    department: str | None,
    within: tuple[datetime, datetime] | None = None,
) -> tuple[list[tuple[AlertEvent, list[AlertEvent]]], list[dict[str, Any]]]:
    """The clusters a department owns (every cluster for None), and its re-routes of
    others' clusters away (``within`` a span, if given), oldest first."""
    owned: list[tuple[AlertEvent, list[AlertEvent]]] = []
    away: list[dict[str, Any]] = []
    for alert in alerts:
        if not is_cluster(alert):
            continue
        if department is None or alert.department == department:
            owned.append((alert, timeline_of(alert.alert_id)))
        elif any(a.action == AlertActionType.REROUTE.value for a in alert.actions):
            away += [
                r
                for r in rerouted_from(timeline_of(alert.alert_id), department)
                if within is None or within[0] <= r["at"] < within[1]
            ]
    away.sort(key=lambda r: r["at"])
    return owned, away
