"""Structured logging: one JSON object per line on stderr, for every hookstream process.

A log call passes its structured fields as ``extra={"fields": {...}}``; they are merged
into the line next to the time, level, logger and message.

The Kafka clients (aiokafka, and Faust and mode above it) narrate every rebalance,
table recovery and coordinator election. Below DEBUG they are kept to warnings, and the
warnings a healthy start-up always produces — a new broker still electing its group
coordinator, a topic not yet in the metadata — are demoted to DEBUG: alarming and
harmless. ``HOOKSTREAM_LOG_LEVEL=DEBUG`` shows all of it.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

KAFKA_CLIENT_LOGGERS = ("aiokafka", "faust", "mode")

# Messages the Kafka clients log at WARNING/ERROR while a broker or group is starting.
STARTUP_NOISE = (
    "Group Coordinator Request failed",
    "Marking the coordinator dead",
    "not found in cluster metadata",
    "Heartbeat failed for group",
    "OffsetCommit failed for group",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class DemoteStartupNoise(logging.Filter):
    """Lower the Kafka clients' start-up warnings to DEBUG (and drop them below it)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and record.name.startswith(KAFKA_CLIENT_LOGGERS):
            message = str(record.msg)
            if any(noise in message for noise in STARTUP_NOISE):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return self.level <= logging.DEBUG
        return True


def configure_logging(level: str = "INFO") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(DemoteStartupNoise(numeric))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in KAFKA_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
