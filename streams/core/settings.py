"""Worker settings: one typed model, read from ``CITYVITALS_*`` environment variables.

The same worker runs on the embedded broker and on an Apache Kafka cluster; only
these settings change (see README, "Running on Apache Kafka"). Each secret setting
(:data:`SECRET_SETTINGS`) may instead come from a file named by
``CITYVITALS_<NAME>_FILE``, as Kubernetes and Docker mount secrets; pydantic-settings'
``secrets_dir`` would want every file in one directory under the variable's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.core.config import DEFAULT_CONFIG_DIR
from streams.core.secrets import FILE_SUFFIX, SecretProblem, read_file, variable_or_file, weakness

SECRET_SETTINGS: dict[str, str] = {
    "deid_key": "the de-identification key",
    "action_key": "the action signing key",
    "action_key_previous": "the previous action signing keys",
    "deadletter_key": "the dead-letter sealing key",
    "sasl_password": "the Kafka SASL password",
}
"""The settings that hold secrets: each may instead be read from the file that
``CITYVITALS_<NAME>_FILE`` names."""

REQUIRED_SECRETS = ("deid_key", "action_key")
"""The secret settings the worker does not start without."""


def split_keys(text: str) -> list[str]:
    """The keys of a list setting: separated by commas or line breaks (a file may hold one
    a line), blanks around them dropped."""
    return [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]


class Settings(BaseSettings):
    # Long on purpose: one field for each CITYVITALS_ variable, as the README's table
    # lists them; split into classes, the variables would need prefixes of their own.
    model_config = SettingsConfigDict(env_prefix="CITYVITALS_", extra="ignore")

    # --- Kafka ---------------------------------------------------------------
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    app_id: str = Field(
        "cityvitals", description="Faust app id: the consumer group and table prefix"
    )
    partitions: int = Field(8, ge=1, description="partitions of every city topic (co-partitioned)")
    replication_factor: int = Field(1, ge=1)
    embedded_broker: bool = Field(
        False,
        description="the broker is the embedded one: apply its workarounds (never for Apache Kafka)",
    )
    # Group join takes about half the session timeout on some brokers; 6 s keeps
    # restarts quick and is still safe against GC pauses of a few seconds.
    session_timeout_s: float = Field(6.0, gt=0)
    stream_stall_s: float = Field(
        300.0,
        gt=0,
        description="seconds after which Faust reports a stream that stopped processing "
        "(its stream_processing_timeout)",
    )

    def kafka_client_options(self) -> dict[str, object]:
        """Connection options for plain aiokafka clients (admin, producers, tools)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        import ssl

        options: dict[str, object] = {"security_protocol": self.security_protocol}
        if "SSL" in self.security_protocol:
            options["ssl_context"] = ssl.create_default_context()
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    # --- the worker ------------------------------------------------------------
    config_dir: Path = DEFAULT_CONFIG_DIR
    roles_file: Path | None = Field(
        None,
        description="users, roles and hashed tokens of the API; default <config dir>/roles.yaml",
    )
    routes_file: Path | None = Field(
        None, description="notification routes and escalation; default <config dir>/routes.yaml"
    )
    notify_timeout_s: float = Field(10.0, gt=0, description="a webhook's time to answer")
    notify_max_attempts: int = Field(50, ge=1, description="attempts before a notification is dead")
    notify_max_backoff_s: float = Field(60.0, gt=0, description="longest wait between attempts")
    notify_give_up_after_s: float = Field(
        3600.0, gt=0, description="a notification still undelivered after this is dead"
    )
    datadir: Path = Path("var/worker")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    stream_queue: int = Field(
        10_000,
        ge=1,
        description="alert events waiting for one live-stream client, at most; a client "
        "further behind is disconnected and resumes from its Last-Event-ID",
    )
    api_history_days: float = Field(
        7.0,
        gt=0,
        description="days of closed alerts and audit records the API keeps in memory (open "
        "alerts are kept whatever their age); older ones are read from Kafka when a query's "
        "since reaches before them",
    )
    api_history_max: int = Field(
        100_000,
        ge=100,
        description="events of closed alerts, and audit records, the API keeps in memory, at "
        "most each; past it the oldest go first, even inside CITYVITALS_API_HISTORY_DAYS",
    )
    api_history_read_max: int = Field(
        500_000,
        ge=1,
        description="records one query for older history may read from Kafka; a query whose "
        "time range holds more is answered 422 naming the limit",
    )
    api_history_read_s: float = Field(
        10.0,
        gt=0,
        description="seconds one query for older history may spend reading Kafka; past it "
        "the query is answered 422 naming the limit",
    )
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: lines for a terminal on one, JSON lines elsewhere"
    )
    # a batch is one transaction with every touched district's state written once: in a
    # backlog with a tenth of appeals, 10,000 ran 1.235 times the events/s of 5,000
    # (median of seven alternated pairs, bench/throughput.py), about half a second a
    # batch, with 384 to 402 MB peak RSS against 340 to 366
    batch_max: int = Field(10_000, ge=1, description="events taken per batch")
    gc_young: int = Field(
        50_000,
        ge=0,
        description="allocations between young-generation garbage collections (0: Python's 700)",
    )
    batch_within_s: float = Field(0.2, gt=0, description="longest wait to fill a batch")
    reader_processes: int = Field(
        default_factory=lambda: 1 if (os.cpu_count() or 1) > 1 else 0,
        ge=0,
        description="processes that read a backlog's records beside the worker (0: the "
        "worker reads alone; default 1 on a machine of two cores or more)",
    )

    # --- event time --------------------------------------------------------------
    window_s: int = Field(60, ge=1, description="tumbling window length, seconds")
    rolling_windows: int = Field(15, ge=1, description="closed windows in the rolling view")
    allowed_lateness_s: float = Field(120.0, ge=0, description="event-time lateness accepted")
    idle_close_s: float = Field(
        60.0, gt=0, description="wall seconds of silence that close a district's windows"
    )
    source_wait_s: dict[str, float] = Field(
        default_factory=dict,
        description="per input source (iot, traffic, fire, sanitation, hotline): wall seconds "
        "a district's windows wait for that source once it falls silent, instead of "
        'CITYVITALS_IDLE_CLOSE_S; JSON, e.g. {"hotline": 15}',
    )
    max_future_s: float = Field(
        300.0, ge=0, description="how far ahead of the clock an event time may be"
    )
    max_age_s: float = Field(
        30 * 86400.0,
        gt=0,
        description="how far behind the clock an event time may be (raise it for back-fills)",
    )
    max_ahead_s: float = Field(
        60.0,
        gt=0,
        description="how far ahead of its district's stream (plus the wall time elapsed) an "
        "event time may be before the record waits for its stream to confirm it",
    )
    hold_max_bytes: int = Field(
        64 * 1024, ge=0, description="bytes of records held back per district, at most"
    )
    max_open_windows: int = Field(
        24 * 60,
        ge=2,
        description="open windows per district; beyond it the oldest are closed (degraded)",
    )

    state_max_bytes: int = Field(
        256 * 1024,
        ge=16 * 1024,
        description="bytes of one detection or notification table value (one changelog "
        "record; keep it under the broker's message.max.bytes); a larger value is shrunk in "
        "its documented order and audited as state_degraded",
    )

    # --- limits on one record ---------------------------------------------------------
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="bytes of one input record")
    max_attributes_bytes: int = Field(
        16 * 1024, ge=64, description="bytes of an event's attributes as published"
    )
    max_depth: int = Field(8, ge=3, le=64, description="JSON nesting depth of one input record")
    max_notes_per_alert: int = Field(
        200,
        ge=1,
        description="notes one alert takes (each at most 4000 characters; field reports and "
        "silence reasons are notes too); past it an action with a note is refused: 409 at the "
        "API, dead-lettered on city.alert-actions",
    )

    # --- privacy -------------------------------------------------------------------
    deid_key: SecretStr | None = Field(
        None,
        description="HMAC key for pseudonyms of personal identifiers, 32 bytes or more; the "
        "worker does not start without one",
    )
    deid_key_file: Path | None = None
    deadletter_key: SecretStr | None = Field(
        None,
        description="key that seals dead letters' original records, 32 bytes or more; default: "
        "derived from the de-identification key",
    )
    deadletter_key_file: Path | None = None

    # --- control topic -------------------------------------------------------------
    action_key: SecretStr | None = Field(
        None,
        description="HMAC key that signs operator actions on city.alert-actions, 32 bytes or "
        "more; the worker applies only actions signed with it (or a previous key) and does not "
        "start without one",
    )
    action_key_file: Path | None = None
    action_key_previous: SecretStr | None = Field(
        None,
        description="earlier action keys still accepted (comma-separated), for rotation",
    )
    action_key_previous_file: Path | None = None
    # what went wrong reading the secrets' files, named with the other problems
    _secret_errors: list[SecretProblem] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        for name, what in SECRET_SETTINGS.items():
            path: Path | None = getattr(self, name + "_file")
            if path is None:
                continue
            variable = f"CITYVITALS_{name.upper()}"
            if getattr(self, name) is not None:
                reason = f"is set twice ({variable} and {variable}{FILE_SUFFIX})"
                self._secret_errors.append(SecretProblem(what, reason, "one of them"))
                continue
            found = read_file(path, variable + FILE_SUFFIX)
            if found.value is None:
                reason = f"cannot be read ({found.error})"
                self._secret_errors.append(SecretProblem(what, reason, variable_or_file(variable)))
            else:
                setattr(self, name, SecretStr(found.value))
        return self

    def secret_problems(self) -> list[SecretProblem]:
        """Every secret setting the worker cannot run with: the de-identification key or the
        action key unset, short or a placeholder; the dead-letter key or a previous action
        key short or a placeholder (unset, the dead-letter key is derived from the
        de-identification key); a file that cannot be read."""
        problems = list(self._secret_errors)
        failed = {p.secret for p in problems}
        for name in (*REQUIRED_SECRETS, "deadletter_key"):
            what, value = SECRET_SETTINGS[name], getattr(self, name)
            if what in failed or (value is None and name not in REQUIRED_SECRETS):
                continue
            why = weakness(None if value is None else value.get_secret_value())
            if why is not None:
                problems.append(
                    SecretProblem(what, why, variable_or_file(f"CITYVITALS_{name.upper()}"))
                )
        previous = self.action_key_previous
        what = SECRET_SETTINGS["action_key_previous"]
        if previous is not None and what not in failed:
            whys = [weakness(k) for k in split_keys(previous.get_secret_value())]
            why = next((w for w in whys if w is not None), None)
            if why is not None:
                by = variable_or_file("CITYVITALS_ACTION_KEY_PREVIOUS")
                problems.append(SecretProblem(what, f"include one that {why}", by))
        return problems

    def deid_secret(self) -> bytes:
        """The de-identification key; ValueError when there is none (the worker checks
        :meth:`secret_problems` first)."""
        if self.deid_key is None:
            raise ValueError(f"{variable_or_file('CITYVITALS_DEID_KEY')} is not set")
        return self.deid_key.get_secret_value().encode()

    def action_keys(self) -> tuple[bytes, list[bytes]]:
        """The action key actions are signed with, and the previous keys also accepted;
        ValueError when there is none (the worker checks :meth:`secret_problems` first)."""
        if self.action_key is None:
            raise ValueError(f"{variable_or_file('CITYVITALS_ACTION_KEY')} is not set")
        previous = self.action_key_previous
        others = split_keys(previous.get_secret_value()) if previous is not None else []
        return self.action_key.get_secret_value().encode(), [k.encode() for k in others]

    @model_validator(mode="after")
    def _known_sources(self) -> Settings:
        from streams.core.messages import EVENT_TOPICS

        for source, wait in self.source_wait_s.items():
            if source not in EVENT_TOPICS:
                raise ValueError(
                    f"CITYVITALS_SOURCE_WAIT_S: unknown source {source!r} "
                    f"(known: {', '.join(EVENT_TOPICS)})"
                )
            if not wait > 0:
                raise ValueError(
                    f"CITYVITALS_SOURCE_WAIT_S: the wait for {source!r} must be more than "
                    f"0 s, got {wait!r}"
                )
        return self

    def source_wait(self, source: str) -> float:
        """Wall seconds a district waits for a silent source (name as in EVENT_TOPICS)."""
        return self.source_wait_s.get(source, self.idle_close_s)

    @model_validator(mode="after")
    def _ahead_within_lateness(self) -> Settings:
        # a record may move its stream's mark by up to max_ahead_s on its own: more than
        # the lateness would let it close windows that in-order records still fall in
        if self.max_ahead_s >= self.allowed_lateness_s > 0:
            raise ValueError(
                f"CITYVITALS_MAX_AHEAD_S ({self.max_ahead_s:g}) must be less than "
                f"CITYVITALS_ALLOWED_LATENESS_S ({self.allowed_lateness_s:g})"
            )
        return self

    @property
    def roles_path(self) -> Path:
        return self.roles_file if self.roles_file is not None else self.config_dir / "roles.yaml"

    @property
    def routes_path(self) -> Path:
        return self.routes_file if self.routes_file is not None else self.config_dir / "routes.yaml"
