"""The worker's log: one structured record per line, JSON when not on a terminal.

Every log record (the product's, Faust's, aiokafka's) goes through structlog's
:class:`~structlog.stdlib.ProcessorFormatter`, so each line carries the same fields:
``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message), ``pid``,
and ``exception`` with the traceback where there is one. On a terminal the lines are
rendered for reading; elsewhere (a container, a file, a log shipper) they are JSON, one
object per line, non-ASCII text as it is. ``CITYVITALS_LOG_FORMAT`` (``json``,
``console``) overrides the choice. Messages name what happened and where (topic,
partition, offset, district, reason), never an event's raw payload.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

import structlog

#: Faust's level names (``CITYVITALS_LOG_LEVEL``) in the logging module's.
LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"}


def _pid(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event["pid"] = os.getpid()
    return event


def renderer(log_format: str, stream: TextIO) -> Any:
    """JSON lines, or lines for a terminal (``auto``: whichever ``stream`` is)."""
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    if console:
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer(serializer=json.dumps, ensure_ascii=False)


def logging_config(
    level: str, log_format: str = "auto", stream: TextIO | None = None
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document: every record through structlog."""
    stream = stream or sys.stdout
    shared = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _pid,
    ]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": shared,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer(log_format, stream),
                ],
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": stream,
                "level": LEVELS.get(level, level.upper()),
            }
        },
        "root": {"level": LEVELS.get(level, level.upper()), "handlers": ["default"]},
    }


def records(text: str) -> list[dict[str, Any]]:
    """The JSON records of a log, skipping lines that are not one (for tests and tools)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
