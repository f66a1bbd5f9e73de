"""One schema per message type, used by producers, agents, tests and docs alike.

=========================  ==================  =======================================
topic                      key                 value
=========================  ==================  =======================================
city.events.<source>       district code       :class:`CityEvent` (what departments send)
city.readings              district code       :class:`Reading` (validated, canonical)
city.deadletter            original key        :class:`DeadLetter` (original bytes + why)
city.vitals                district code       :class:`DistrictVitals` (per closed window)
city.emergency-command     district code       :class:`AlertEvent` (firing/updated/resolved)
city.alert-actions         district code       :class:`AlertAction` (operator actions)
city.audit                 user                :class:`AuditRecord` (reads, actions, config)
city.notify-outbox         district code       :class:`Notification` (to deliver)
city.notifications         district code       :class:`NotificationOutcome` (what happened)
=========================  ==================  =======================================

All values are JSON (UTF-8). Times are ISO 8601 with a time zone.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.core.config import Sharing

EVENT_TOPICS: dict[str, str] = {
    "iot": "city.events.iot",
    "traffic": "city.events.traffic",
    "fire": "city.events.fire",
    "sanitation": "city.events.sanitation",
    "hotline": "city.events.hotline",
    "appeals": "city.events.appeals",
}
#: The input topic of citizens' appeals (an :class:`AppealRecord` each, any channel).
APPEALS_TOPIC = EVENT_TOPICS["appeals"]
READINGS_TOPIC = "city.readings"
DEADLETTER_TOPIC = "city.deadletter"
VITALS_TOPIC = "city.vitals"
#: Each closed window's appeal tallies per category and street, for departments' feedback
APPEAL_TALLIES_TOPIC = "city.appeal-tallies"
ALERTS_TOPIC = "city.emergency-command"
ACTIONS_TOPIC = "city.alert-actions"
AUDIT_TOPIC = "city.audit"
OUTBOX_TOPIC = "city.notify-outbox"
NOTIFICATIONS_TOPIC = "city.notifications"

Text = Annotated[str, Field(min_length=1, max_length=256)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        # pydantic-core's own JSON: the same bytes as orjson over model_dump(mode="json"),
        # in a third of the time (this runs once per reading)
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)


class Location(_Message):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class CityEvent(_Message):
    """The envelope every department system publishes, one indicator value each.

    Example::

        {"event_id": "tr-339901-0001", "source": "traffic.loop.339901001.07",
         "district": "339901", "street": "339901001",
         "indicator": "traffic.speed_kmh", "value": 31.5, "unit": "km/h",
         "event_time": "2026-11-24T08:15:00+08:00",
         "location": {"lat": 30.25, "lon": 120.17}, "attributes": {}}
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_id: Text
    source: Text
    district: Text
    street: Text | None = None
    indicator: Text
    value: FiniteFloat
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    event_time: AwareDatetime
    location: Location | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class Origin(_Message):
    """Where a message was read from."""

    topic: str
    partition: int
    offset: int


class Reading(_Message):
    """One validated indicator value in its canonical unit, de-identified."""

    event_id: str
    source: str
    district: str
    street: str | None = None
    indicator: str
    domain: str
    value: float
    unit: str
    sharing: Sharing
    event_time: datetime
    ingest_time: datetime
    location: Location | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    origin: Origin


class DeadLetterReason(StrEnum):
    """Why an event was rejected; also the ``reason`` label of the dead-letter metric."""

    BAD_JSON = "bad_json"
    SCHEMA = "schema"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    # over CITYVITALS_MAX_EVENT_BYTES or CITYVITALS_MAX_ATTRIBUTES_BYTES, or a note past
    # CITYVITALS_MAX_NOTES_PER_ALERT
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"  # nested deeper than CITYVITALS_MAX_DEPTH
    DUPLICATE_KEY = "duplicate_key"  # a JSON object names one key twice
    UNKNOWN_DISTRICT = "unknown_district"
    UNKNOWN_STREET = "unknown_street"
    UNKNOWN_INDICATOR = "unknown_indicator"
    WRONG_TOPIC = "wrong_topic"
    KEY_MISMATCH = "key_mismatch"
    UNKNOWN_UNIT = "unknown_unit"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_EVENT_TIME = "future_event_time"  # ahead of the clock, or of its stream
    TOO_OLD = "too_old"  # older than CITYVITALS_MAX_AGE_S
    LATE = "late"
    UNPROCESSABLE = "unprocessable"  # failed in a way no check foresaw; ``stage`` says where
    # an action on city.alert-actions without a valid signature (streams.core.signing)
    UNAUTHENTICATED = "unauthenticated"
    # an appeal from a channel, or filed under a category, config/appeals.yaml does not name
    UNKNOWN_CHANNEL = "unknown_channel"
    UNKNOWN_CATEGORY = "unknown_category"


class DeadLetterStage(StrEnum):
    """Where in the worker a record was rejected."""

    DECODE = "decode"  # size, nesting, JSON, schema
    VALIDATE = "validate"  # the city's catalogue, units, ranges, the clock
    DEIDENTIFY = "deidentify"
    READING = "reading"  # building and serialising the Reading
    WINDOW = "window"  # event time against the windows and the stream's progress
    BATCH = "batch"  # isolated by retrying a failing batch in halves
    ACTION = "action"  # an operator action on city.alert-actions


#: the stage each reason is found at, unless the dead letter says otherwise
REASON_STAGE: dict[DeadLetterReason, DeadLetterStage] = {
    **{
        r: DeadLetterStage.DECODE
        for r in (
            DeadLetterReason.BAD_JSON,
            DeadLetterReason.SCHEMA,
            DeadLetterReason.WRONG_TYPE,
            DeadLetterReason.NOT_FINITE,
            DeadLetterReason.TOO_LARGE,
            DeadLetterReason.TOO_DEEP,
            DeadLetterReason.DUPLICATE_KEY,
        )
    },
    **{
        r: DeadLetterStage.VALIDATE
        for r in (
            DeadLetterReason.UNKNOWN_DISTRICT,
            DeadLetterReason.UNKNOWN_STREET,
            DeadLetterReason.UNKNOWN_INDICATOR,
            DeadLetterReason.WRONG_TOPIC,
            DeadLetterReason.KEY_MISMATCH,
            DeadLetterReason.UNKNOWN_UNIT,
            DeadLetterReason.OUT_OF_RANGE,
            DeadLetterReason.FUTURE_EVENT_TIME,
            DeadLetterReason.TOO_OLD,
            DeadLetterReason.UNKNOWN_CHANNEL,
            DeadLetterReason.UNKNOWN_CATEGORY,
        )
    },
    DeadLetterReason.LATE: DeadLetterStage.WINDOW,
    DeadLetterReason.UNPROCESSABLE: DeadLetterStage.BATCH,
    DeadLetterReason.UNAUTHENTICATED: DeadLetterStage.ACTION,
}


class AppealRecord(_Message):
    """One citizen's appeal as a channel delivers it, on ``city.events.appeals``.

    Keyed by the appeal's district. ``payload`` is the channel's own record, read by
    the channel's adapter (``config/appeals.yaml``; each channel's payload is in
    docs/appeals.md). The worker de-identifies it, files it under a category of the
    catalogue and scores its emotion; the result is a reading of the ``citizen``
    domain whose attributes carry the appeal.

    Example::

        {"channel": "hotline_12345",
         "payload": {"order_no": "GD2026112400123", "accepted_at": "2026-11-24 23:15:03",
                     "category": "噪声扰民", "district_code": "339901", ...}}
    """

    channel: Annotated[str, Field(min_length=1, max_length=64)]
    payload: dict[str, Any]


class DeadLetter(_Message):
    """A rejected record: why, where it came from, and its bytes, sealed.

    The original key and value may hold personal data (that is often why they
    failed), so they are not published in the clear: ``sealed`` is the
    original record encrypted with the dead-letter key
    (:mod:`streams.ingest.sealing`), which whoever repairs and replays dead letters
    holds; ``preview`` is the start of the value as text with personal
    identifiers pseudonymised, for reading without the key. ``detail`` is
    scrubbed the same way.
    """

    reason: DeadLetterReason
    stage: DeadLetterStage
    detail: str
    origin: Origin
    size: int  # bytes of the original value
    preview: str
    sealed: str  # base64 of the sealed original key and value
    dead_lettered_at: datetime


class WindowStats(_Message):
    """Aggregate of one indicator's values over a window."""

    count: int
    sum: float
    min: float
    max: float
    mean: float


class IndicatorVitals(_Message):
    minute: WindowStats | None = None
    rolling: WindowStats
    health: float


class DistrictVitals(_Message):
    """A district's vital signs after one event-time window closed.

    ``indicators`` holds the closed minute and the rolling view (the last
    ``rolling_minutes`` closed minutes) per indicator; ``domains`` the 0–100
    sub-index per domain (null when the domain had no data in the rolling view);
    ``composite`` the weighted 0–100 district index.
    """

    district: str
    window_start: datetime
    window_end: datetime
    rolling_minutes: int
    events: int
    indicators: dict[str, IndicatorVitals]
    domains: dict[str, float | None]
    composite: float | None = None
    closed_at: datetime


class AppealTally(_Message):
    """Appeals of one category (in one street, or a whole district) in one window."""

    appeals: int = Field(ge=0)
    extreme: int = Field(ge=0)  # of extreme negative emotion
    rated: int = Field(ge=0)  # with a good or bad service rating
    bad: int = Field(ge=0)  # rated bad
    repeats: int = Field(ge=0)  # repeating an earlier appeal about the place and category


class AppealTallies(_Message):
    """A district's appeals in one closed event-time window, by category, published on
    ``city.appeal-tallies`` (keyed by district) for each window that counted any.

    ``categories`` tallies the whole district; ``streets`` the streets named, street
    code to category to tally. Departments' feedback (their categories ranked, trends,
    repeats after handling, the daily report) is read from these.
    """

    district: str
    window_start: datetime
    window_end: datetime
    categories: dict[str, AppealTally]
    streets: dict[str, dict[str, AppealTally]] = Field(default_factory=dict)
    closed_at: datetime


# --- alerts ---------------------------------------------------------------------------


class Grade(IntEnum):
    """China's public warning levels: I (red) is the most serious, IV (blue) the least."""

    I = 1  # noqa: E741 - the level's official name
    II = 2
    III = 3
    IV = 4

    @property
    def colour(self) -> str:
        return GRADE_COLOURS[self]

    @property
    def roman(self) -> str:
        return self.name


# The labels of grades and kinds in Chinese and English: every text the product writes
# (headlines, CAP, notifications, the terminal feed) takes them from here.
GRADE_COLOURS: dict[Grade, str] = {
    Grade.I: "red",
    Grade.II: "orange",
    Grade.III: "yellow",
    Grade.IV: "blue",
}
GRADE_COLOURS_ZH: dict[Grade, str] = {
    Grade.I: "红色",
    Grade.II: "橙色",
    Grade.III: "黄色",
    Grade.IV: "蓝色",
}


class AlertKind(StrEnum):
    """What an alert says about the city."""

    WARNING = "warning"  # 预警: a risk, or a trend toward a limit (forecast crossing)
    ALARM = "alarm"  # 告警: a limit crossed, or a confirmed anomaly in observed values
    COMPOSITE = "composite"  # several weak signals across domains in one place
    DATA_QUALITY = "data_quality"  # a source silent or implausible; goes to the data's owner
    # 舆情预警: citizens' appeals of one category gathering in one place, surging or
    # angry; goes to the department that owns the category
    PUBLIC_OPINION = "public_opinion"


KIND_ZH: dict[AlertKind, str] = {
    AlertKind.WARNING: "预警",
    AlertKind.ALARM: "告警",
    AlertKind.COMPOSITE: "综合预警",
    AlertKind.DATA_QUALITY: "数据质量告警",
    AlertKind.PUBLIC_OPINION: "舆情预警",
}
KIND_EN: dict[AlertKind, str] = {
    AlertKind.WARNING: "warning",
    AlertKind.ALARM: "alarm",
    AlertKind.COMPOSITE: "composite warning",
    AlertKind.DATA_QUALITY: "data-quality alert",
    AlertKind.PUBLIC_OPINION: "public-opinion warning",
}


class AlertStatus(StrEnum):
    FIRING = "firing"  # the alert's first event
    UPDATED = "updated"  # grade up or down, new evidence, or an operator action
    RESOLVED = "resolved"  # the condition cleared (or an operator resolved it)


class Workflow(StrEnum):
    """Where operators are with an alert (set by actions on ``city.alert-actions``)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    RESOLVED = "resolved"
    FALSE_POSITIVE = "false_positive"


class EvidencePoint(_Message):
    time: datetime
    value: float


class EvidenceReading(_Message):
    """The reading that decided an alert on its own (``Evidence.decided == "reading"``)."""

    time: datetime  # its event time
    value: float  # in the indicator's unit
    origin: str | None = None  # "topic:partition:offset" of its input record, or a file row


class Forecast(_Message):
    """A trend forecast: the value expected ``horizon_s`` ahead and when it crosses the limit."""

    value: float
    horizon_s: float
    crossing_time: datetime | None = None
    limit: float | None = None


class MemberSignal(_Message):
    """One weak signal inside a composite alert."""

    indicator: str
    street: str | None = None
    domain: str
    score: float
    event_time: datetime
    detail: str


class AppealSample(_Message):
    """One de-identified appeal a public-opinion alert shows as its evidence."""

    appeal_id: str
    channel: str
    street: str | None = None
    time: datetime  # its event time
    text: str  # de-identified, cut to APPEAL_SAMPLE_CHARS
    intensity: float  # the citizen's negative emotion, 0..1
    emotion: str | None = None  # the dominant emotion category
    extreme: bool = False
    words: list[str] = Field(default_factory=list)  # the words that drove the score
    repeat: bool = False  # it repeats an earlier appeal about the same place and category


APPEAL_SAMPLE_CHARS = 160


class Evidence(_Message):
    """Why an alert fired: enough for an operator to check it by hand."""

    rule: str  # the threshold rule id, or the model's name
    version: str  # the rule's config digest, or the model's version
    observed: float | None = None  # the value the rule or model judged
    aggregate: str | None = None  # e.g. "mean over 15 min", "reading"
    window_start: datetime | None = None
    window_end: datetime | None = None
    threshold: float | None = None  # the grade boundary crossed
    baseline: float | None = None  # what the model expected
    score: float | None = None  # the model's anomaly score, 0..1
    forecast: Forecast | None = None
    values: list[EvidencePoint] = Field(default_factory=list)  # recent values, oldest first
    members: list[MemberSignal] = Field(default_factory=list)  # composite alerts only
    detail: str | None = None
    # threshold rules: "reading" when one reading decided at once (``reading`` names
    # it), "window" when a closed window did
    decided: str | None = None
    reading: EvidenceReading | None = None
    # public-opinion alerts: the appeals' category and some of its appeals, angriest first
    category: str | None = None
    appeals: list[AppealSample] = Field(default_factory=list)
    # a district's alert of a category clustering in several streets: those streets (the
    # offices of each see it, and a street joining them updates it)
    streets: list[str] = Field(default_factory=list)


class ActionRecord(_Message):
    """An operator action as the alert remembers it.

    ``note`` is set only on the last record of the event the action caused: an
    alert's history of earlier actions carries no notes, so an event stays
    bounded whatever operators write. The alert's timeline (all its events)
    holds every note: the API's alert detail puts them back on the records.
    """

    action_id: str
    action: str
    actor: str
    role: str
    at: datetime
    department: str | None = None
    note: str | None = None


class AlertEvent(_Message):
    """One event in an alert's life, published on ``city.emergency-command``.

    ``alert_id`` names one occurrence; ``fingerprint`` the condition (district,
    street, indicator or composite key, rule), so a repeated signal updates the
    open alert and reprocessing never creates a second one. ``sequence`` counts
    the alert's events from 1 (the firing event).
    """

    alert_id: str
    fingerprint: str
    sequence: int = Field(ge=1)
    status: AlertStatus
    grade: Grade
    colour: str
    kind: AlertKind
    district: str
    street: str | None = None
    domain: str | None = None
    indicators: list[str]
    department: str
    co_departments: list[str] = Field(default_factory=list)
    sharing: Sharing = Sharing.NOT_SHARED
    evidence: Evidence
    first_seen: datetime
    last_update: datetime
    event_time: datetime  # event time of the reading or window that caused this event
    headline_zh: str
    headline_en: str
    workflow: Workflow = Workflow.OPEN
    # the compact history (at most MAX_ACTIONS, no notes), then the action that caused
    # this event with its note; see ActionRecord and streams.alerting.lifecycle.action_history
    actions: list[ActionRecord] = Field(default_factory=list)
    # not set by the worker: inhibition is each reader's view of the alerts it holds
    # (streams.alerting.lifecycle.inhibitor); accepted so that records which carry it still read
    inhibited_by: str | None = None
    # a silence or maintenance window that covers it (notifications skip this one)
    silenced_by: str | None = None


class AlertActionType(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    DISPATCH = "dispatch"
    NOTE = "note"
    RESOLVE = "resolve"
    FALSE_POSITIVE = "false_positive"
    SILENCE = "silence"
    FIELD_REPORT = "field_report"
    ESCALATE = "escalate"  # system: nobody acknowledged in time; notified one level up
    REROUTE = "reroute"  # not the owner's responsibility: the alert moves to ``department``


class AlertAction(_Message):
    """An operator's action on an alert, published on ``city.alert-actions`` (keyed by district).

    The alert lifecycle applies it, so actions survive restarts and work when
    several workers share the partitions. It applies only actions signed with the
    action key (``signature``, :mod:`streams.core.signing`): those of the API and of
    the notifier's escalations, not whatever else can write to the topic.
    """

    # the strings an alert keeps in its history are bounded, like the note
    action_id: Annotated[str, Field(max_length=200)]
    alert_id: str
    district: str
    action: AlertActionType
    actor: Annotated[str, Field(max_length=200)]
    role: Annotated[str, Field(max_length=64)]
    at: AwareDatetime
    # dispatch or reroute: to whom
    department: Annotated[str, Field(max_length=64)] | None = None
    note: Annotated[str, Field(max_length=4000)] | None = None
    silence_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None  # silence: how long
    source_ip: str | None = None
    kind: Literal["operator", "responder", "system"] = "operator"
    # set by the writer; the lifecycle applies no action without a valid one
    signature: (
        Annotated[
            str,
            Field(
                max_length=128,
                description="HMAC-SHA256, in hex, under the action key, of every other "
                "field (docs/architecture.md, 'Who may act on an alert')",
            ),
        ]
        | None
    ) = None


class AuditRecord(_Message):
    """Who did or read what, when and from where; published on ``city.audit``.

    ``action`` is ``read_alert``, ``read_audit``, an :class:`AlertActionType`
    value, ``denied`` (a refused request) or ``config_loaded`` (a worker started
    with configuration files of the digests in ``detail``).
    """

    at: AwareDatetime
    user: str
    role: str
    action: str
    target: str | None = None  # an alert id, a path
    source_ip: str | None = None
    detail: str | None = None


class Notification(_Message):
    """One notification to deliver, in the durable outbox ``city.notify-outbox``.

    ``notification_id`` is the idempotency key: a digest of the receiver, the
    group and the exact alert events, so planning the same notification again
    (after a crash) gives the same key.

    ``alerts`` are slim: each alert's latest event without its action history
    and evidence series, with at most a few composite members (see
    :class:`streams.notify.planner.AlertBrief`), so a record stays far below Kafka's
    message size. The console link of each alert leads to the whole of it.
    """

    notification_id: str
    receiver: str
    route: str
    group_key: str
    group_labels: dict[str, str] = Field(default_factory=dict)
    status: Literal["firing", "resolved"]
    reason: str  # "group_wait", "group_interval", "repeat", "escalation:district", ...
    alerts: list[AlertEvent]  # the most serious first, at most MAX_NOTIFIED of a group
    truncated_alerts: int = 0  # alerts of the group left out of ``alerts`` (counted only)
    district: str
    created_at: AwareDatetime


class NotificationOutcome(_Message):
    """What became of one notification, on ``city.notifications``."""

    notification_id: str
    receiver: str
    route: str
    reason: str
    outcome: Literal["delivered", "dead"]
    attempts: int
    status_code: int | None = None
    error: str | None = None
    alert_ids: list[str]
    district: str
    seconds: float  # from the first attempt to the outcome
    finished_at: AwareDatetime


#: The message on each topic (the input topics of department systems carry a
#: :class:`CityEvent`, that of appeals an :class:`AppealRecord`).
TOPIC_MESSAGES: dict[str, type[_Message]] = {
    **dict.fromkeys(EVENT_TOPICS.values(), CityEvent),
    APPEALS_TOPIC: AppealRecord,
    READINGS_TOPIC: Reading,
    DEADLETTER_TOPIC: DeadLetter,
    VITALS_TOPIC: DistrictVitals,
    APPEAL_TALLIES_TOPIC: AppealTallies,
    ALERTS_TOPIC: AlertEvent,
    ACTIONS_TOPIC: AlertAction,
    AUDIT_TOPIC: AuditRecord,
    OUTBOX_TOPIC: Notification,
    NOTIFICATIONS_TOPIC: NotificationOutcome,
}
#: Topics that department systems write to (their schema is what the worker accepts);
#: the worker writes the others (their schema is what it writes).
WRITTEN_BY_OTHERS = frozenset({*EVENT_TOPICS.values(), ACTIONS_TOPIC})
#: who writes a topic, where it is not department systems or the worker alone
WRITERS = {ACTIONS_TOPIC: "the cityvitals API and notifier, each action signed with the action key"}


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema (draft 2020-12) per topic, by file name (``<topic>.schema.json``).

    A topic others write to gets the schema of what the worker accepts (pydantic's
    validation mode); a topic the worker writes, the schema of what it writes (its
    serialization mode, fields left out when empty marked as not required).
    ``docs/schemas/`` holds them, written by ``cityvitals schemas``.
    """
    out: dict[str, dict[str, Any]] = {}
    for topic, model in sorted(TOPIC_MESSAGES.items()):
        mode: Literal["validation", "serialization"] = (
            "validation" if topic in WRITTEN_BY_OTHERS else "serialization"
        )
        schema = model.model_json_schema(mode=mode)
        writer = WRITERS.get(topic) or (
            "department systems" if topic in WRITTEN_BY_OTHERS else "the cityvitals worker"
        )
        out[f"{topic}.schema.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://cityvitals.example/schemas/{topic}.schema.json",
            "description": f"One message on Kafka topic {topic}, written by {writer}. "
            + (schema.get("description") or ""),
            **{k: v for k, v in schema.items() if k != "description"},
        }
    return out
