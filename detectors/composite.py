"""Composite weak-signal correlation: several faint signals in one place make one alert.

A building fire shows first as a smoke-alarm blip, slower traffic and a few
more complaints in one street: each below its own alarm level, together a
pattern. :class:`Correlator` keeps the weak signals of one district (anomaly
scores that did not alert, threshold rules pending or near their first
boundary) for ``window_s`` of event time and reports a composite alert when
signals from at least ``min_domains`` different domains coincide, in one street
if they share one, else in the district:

- ``fire`` with the member signals, grade IV for ``min_domains`` domains, one
  grade more serious for each further domain (down to II);
- ``update`` when the grade or the set of domains changes;
- ``resolve`` once fewer than ``min_domains`` domains have signalled for
  ``hold_s``.

>>> c = Correlator(window_s=900, min_domains=3)
>>> c.add(WeakSignal(0, "fire", "fire.smoke_alarms", "339901001", 0.4, "1 alarm"))
>>> c.add(WeakSignal(60, "traffic", "traffic.speed_kmh", "339901001", 0.4, "slow"))
>>> c.evaluate(60) is None
True
>>> c.add(WeakSignal(120, "citizen", "hotline.complaints", "339901001", 0.5, "3 calls"))
>>> out = c.evaluate(120)
>>> (out.kind, out.grade, out.street, sorted(m.domain for m in out.members))
('fire', 4, '339901001', ['citizen', 'fire', 'traffic'])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_SIGNALS = 256


@dataclass(frozen=True)
class WeakSignal:
    """One faint sign: when, which domain and indicator, where, how strong, and why."""

    at: float
    domain: str
    indicator: str
    street: str | None
    score: float  # 0..1, how unusual
    detail: str


@dataclass(frozen=True)
class CompositeChange:
    kind: str  # "fire" | "update" | "resolve"
    grade: int
    street: str | None
    members: tuple[WeakSignal, ...]
    at: float


@dataclass
class Correlator:
    """The weak signals of one district and the composite alert they make; picklable."""

    window_s: float = 900.0
    min_domains: int = 3
    hold_s: float = 600.0
    signals: deque[WeakSignal] = field(default_factory=lambda: deque(maxlen=MAX_SIGNALS))
    open_street: str | None = None
    open_grade: int | None = None
    #: sorted, so that the state's bytes do not depend on a process's string hashing
    open_domains: tuple[str, ...] = ()
    clear_since: float | None = None

    def add(self, signal: WeakSignal) -> None:
        self.signals.append(signal)

    def _members(self, now: float) -> tuple[str | None, list[WeakSignal]]:
        while self.signals and self.signals[0].at < now - self.window_s:
            self.signals.popleft()
        recent = [s for s in self.signals if s.at <= now]
        best: tuple[str | None, list[WeakSignal]] = (None, [])
        streets = {s.street for s in recent if s.street is not None}
        # a street where enough domains coincide; signals without a street count there too
        for street in sorted(streets):
            here = [s for s in recent if s.street in (street, None)]
            if len({s.domain for s in here}) >= self.min_domains and len(here) > len(best[1]):
                best = (street, here)
        if best[1]:
            return best
        return (None, recent)

    def evaluate(self, now: float) -> CompositeChange | None:
        street, members = self._members(now)
        # one member per (domain, indicator, street): the strongest
        strongest: dict[tuple[str, str, str | None], WeakSignal] = {}
        for s in members:
            key = (s.domain, s.indicator, s.street)
            if key not in strongest or s.score > strongest[key].score:
                strongest[key] = s
        chosen = tuple(sorted(strongest.values(), key=lambda s: (s.domain, s.indicator)))
        domains = tuple(sorted({s.domain for s in chosen}))
        if len(domains) >= self.min_domains:
            grade = max(2, 4 - (len(domains) - self.min_domains))
            self.clear_since = None
            if self.open_grade is None:
                self.open_street, self.open_grade, self.open_domains = street, grade, domains
                return CompositeChange("fire", grade, street, chosen, now)
            # (sorted again: state written before they were kept sorted)
            if grade != self.open_grade or domains != tuple(sorted(self.open_domains)):
                self.open_grade, self.open_domains = grade, domains
                return CompositeChange("update", grade, self.open_street, chosen, now)
            return None
        if self.open_grade is None:
            return None
        if self.clear_since is None:
            self.clear_since = now
        if now - self.clear_since >= self.hold_s:
            change = CompositeChange("resolve", self.open_grade, self.open_street, chosen, now)
            self.open_street, self.open_grade, self.open_domains = None, None, ()
            self.clear_since = None
            return change
        return None
