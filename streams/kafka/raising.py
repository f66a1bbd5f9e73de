"""Alerts onto ``city.emergency-command``: from closed windows, from readings early
rules decide at once, and from operators' actions; with their metrics.

Each district's detection state (:class:`~streams.alerting.detection.DistrictDetection`)
lives in the ``district-detection`` table; a batch marks the districts it changed, and
:class:`~streams.kafka.tables.TableWriter` writes them after the batch's outputs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.lifecycle import NoteLimitError
from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import (
    ALERTS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Grade,
    Origin,
    Workflow,
)
from streams.core.signing import ActionSigner
from streams.ingest.ingestor import DeadLetters, _failure, quoted
from streams.kafka.counting import Batch
from streams.kafka.feed import Outputs, Record
from streams.kafka.tables import TableWriter
from streams.state.windows import ClosedWindow, DistrictWindows

log = logging.getLogger(__name__)
_ACKNOWLEDGING = (AlertActionType.ACKNOWLEDGE.value, AlertActionType.DISPATCH.value)


def rule_class_of(event: AlertEvent) -> tuple[str, float]:
    """How an alert was decided (``reading``, ``monotone``, ``window`` or ``model``) and the
    event time its latency counts from: the deciding reading's, else the event's."""
    evidence = event.evidence
    if evidence.decided == "reading" and evidence.reading is not None:
        cls = "reading" if evidence.aggregate == "reading" else "monotone"
        return cls, evidence.reading.time.timestamp()
    cls = "window" if evidence.decided == "window" else "model"
    return cls, event.event_time.timestamp()


def count_alert_event(event: AlertEvent) -> None:
    """Metrics of one published alert event, department performance included."""
    grade = event.grade.roman
    metrics.alert_events.labels(event.status.value, grade, event.kind.value, event.department).inc()
    if event.status is AlertStatus.UPDATED and event.actions:
        *earlier, last = event.actions
        if last.action in _ACKNOWLEDGING and not any(a.action in _ACKNOWLEDGING for a in earlier):
            metrics.time_to_acknowledge.labels(event.department, grade).observe(
                max(0.0, (last.at - event.first_seen).total_seconds())
            )
    if event.status is AlertStatus.FIRING:
        rule_class, since = rule_class_of(event)
        metrics.event_to_alert.labels(event.kind.value, rule_class).observe(
            max(0.0, time.time() - since)
        )
    if event.status is AlertStatus.RESOLVED:
        outcome = {Workflow.RESOLVED: "resolved", Workflow.FALSE_POSITIVE: "false_positive"}.get(
            event.workflow, "cleared"
        )
        metrics.alerts_closed.labels(event.department, grade, outcome).inc()
        metrics.time_to_resolve.labels(event.department, grade).observe(
            max(0.0, (event.last_update - event.first_seen).total_seconds())
        )


def start_alert_series(cfg: CityConfig) -> None:
    """Create every alert series at 0, so that rate() and increase() see its first event."""
    departments = list(cfg.catalogue.departments)
    for grade in Grade:
        for department in departments:
            for kind in AlertKind:
                for status in AlertStatus:
                    metrics.alert_events.labels(status.value, grade.roman, kind.value, department)
            for outcome in ("resolved", "false_positive", "cleared"):
                metrics.alerts_closed.labels(department, grade.roman, outcome)
            metrics.time_to_acknowledge.labels(department, grade.roman)
            metrics.time_to_resolve.labels(department, grade.roman)


class AlertRaiser:
    """Runs detection for the worker's districts and publishes the alert events."""

    def __init__(
        self,
        table: Any,
        context: DetectionContext,
        cfg: CityConfig,
        *,
        window_s: float,
        max_action_bytes: int,
        outputs: Callable[[], Outputs],
        writer: TableWriter,
        dead_letters: DeadLetters,
        dead_letter: Callable[[Outputs, bytes | None, DeadLetter], None],
        signer: ActionSigner,
    ) -> None:
        self.table, self.context = table, context
        self._signer = signer
        self._window_s = window_s
        self._max_action_bytes = max_action_bytes
        self._outputs, self._writer = outputs, writer
        self._dead_letters, self._dead_letter = dead_letters, dead_letter
        self._districts = frozenset(cfg.districts)
        start_alert_series(cfg)

    def of(self, district: str, detected: dict[str, DistrictDetection]) -> DistrictDetection:
        """The district's detection state, marked to be written at the end of the batch."""
        state = detected.get(district)
        if state is None:
            state = self.table.get(district.encode()) or DistrictDetection(district)
            detected[district] = state
        return state

    def _raise(self, out: Outputs, state: DistrictDetection, events: list[AlertEvent]) -> None:
        key = state.district.encode()
        for event in events:
            out.add(ALERTS_TOPIC, key, event.to_json())
            count_alert_event(event)
        if events:
            self.count_open(state)

    def windows_closed(self, batch: Batch, closed: list[ClosedWindow]) -> None:
        """Detection over each closed window, then the kept early readings whose turn
        has come with them."""
        out, detected = batch.out, batch.detected
        for window in closed:
            state = self.of(window.district, detected)
            self._raise(out, state, state.on_window(window, self.context))
        for district in dict.fromkeys(w.district for w in closed):
            self._catch_up_early(out, district, detected, batch.touched.get(district))

    def decide_early(self, batch: Batch) -> None:
        """The batch's readings that early rules watch, in arrival order: alarms they decide
        now rather than when their window closes (:mod:`streams.alerting.early`)."""
        window_s, detected = self._window_s, batch.detected
        for district, result, ref, totals in batch.early:
            known = detected.get(district) or self.table.get(district.encode())
            if not (known or DistrictDetection(district)).crossings(
                result.indicator, result.street, result.t, result.value, self.context,
                window_s, totals,
            ):  # fmt: skip
                continue  # far from every bound: the state stays as it is, unwritten
            state = self.of(district, detected)
            windows = batch.touched[district]
            events = state.on_reading(
                result.indicator,
                result.street,
                result.t,
                result.value,
                ref,
                self.context,
                windows.open,
                window_s,
                totals,
            )
            self._raise(batch.out, state, events)

    def _catch_up_early(
        self,
        out: Outputs,
        district: str,
        detected: dict[str, DistrictDetection],
        windows: DistrictWindows | None,
    ) -> None:
        """Windows of the district closed: kept readings whose turn has come are raised."""
        state = detected.get(district)
        if state is None or windows is None or not any(s.readings for s in state.early.values()):
            return
        self._raise(out, state, state.catch_up(windows.open, self._window_s, self.context))

    def _action_problem(
        self, key: bytes | None, value: bytes
    ) -> tuple[AlertAction | None, tuple[DeadLetterReason, str] | None]:
        """The action a record holds, or why it is none the worker applies."""
        if len(value) > self._max_action_bytes:
            return None, (
                DeadLetterReason.TOO_LARGE,
                f"the record is {len(value)} bytes; at most {self._max_action_bytes} are accepted",
            )
        try:
            action = AlertAction.model_validate_json(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"]) or "(document)"
            return None, (DeadLetterReason.SCHEMA, f"{where}: {err['msg']}")
        forged = self._signer.problem(action)
        if forged is not None:
            return None, (DeadLetterReason.UNAUTHENTICATED, forged)
        shown = None if key is None else key.decode("utf-8", "replace")
        if action.district not in self._districts:
            return action, (
                DeadLetterReason.UNKNOWN_DISTRICT,
                f"district {quoted(action.district)} is not in the city",
            )
        if shown != action.district:
            return action, (
                DeadLetterReason.KEY_MISMATCH,
                f"message key {quoted(shown)} is not the action's district {quoted(action.district)}",
            )
        return action, None

    async def apply_action(self, msg: Record) -> None:
        """Apply one operator action from ``city.alert-actions`` (caller holds the state lock).

        An invalid action goes to the dead-letter topic, and so does one without a valid
        signature (``unauthenticated``: not from the API or the notifier), before it
        can change anything; a repeated one (same action id) changes nothing.
        """
        now = datetime.now(UTC)
        key, value = msg.key, msg.value if msg.value is not None else b""
        origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        out = self._outputs()
        action, problem = self._action_problem(key, value)
        if problem is not None or action is None:
            reason, detail = problem or (DeadLetterReason.SCHEMA, "not an action")
            if reason is DeadLetterReason.UNAUTHENTICATED:
                log.warning(
                    "refused the action at %s:%d@%d: %s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    detail,
                )
            letter = self._dead_letters.make(
                origin, key, value, reason, detail, now, DeadLetterStage.ACTION
            )
            self._dead_letter(out, key, letter)
            await out.send()
            return
        district = action.district.encode()
        state = self.table.get(district) or DistrictDetection(action.district)
        try:
            events = state.act(action, self.context)
            for event in events:
                out.add(ALERTS_TOPIC, district, event.to_json())
        except NoteLimitError as exc:  # refused before it changed anything
            letter = self._dead_letters.make(
                origin,
                key,
                value,
                DeadLetterReason.TOO_LARGE,
                str(exc),
                now,
                DeadLetterStage.ACTION,
            )
            self._dead_letter(out, district, letter)
            await out.send()
            return
        except Exception as exc:  # an action no check foresaw: it alone is set aside
            self._writer.restore_detection(action.district)
            out = self._outputs()
            letter = self._dead_letters.make(
                origin,
                key,
                value,
                DeadLetterReason.UNPROCESSABLE,
                f"applying the action failed: {_failure(exc)}",
                now,
                DeadLetterStage.ACTION,
            )
            self._dead_letter(out, district, letter)
            await out.send()
            return
        for event in events:
            count_alert_event(event)
        metrics.actions_applied.labels(action.action.value).inc()
        await out.send()
        if events:
            self.count_open(state)
            await self._writer.write_detection(action.district, state)

    def count_open(self, state: DistrictDetection) -> None:
        """The district's open alerts by grade, into the ``open_alerts`` gauge."""
        open_by_grade = Counter(a.grade.roman for a in state.book.open.values())
        for grade in Grade:
            metrics.open_alerts.labels(state.district, grade.roman).set(open_by_grade[grade.roman])
