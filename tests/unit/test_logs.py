"""The JSON log format and the demotion of the Kafka clients' start-up noise."""

from __future__ import annotations

import logging

import orjson
import pytest

from schemas.logs import DemoteStartupNoise, JsonFormatter


def record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_a_line_is_one_json_object_with_the_fields_merged() -> None:
    line = record("hookstream.ingress.delivery", logging.INFO, "delivery accepted")
    line.fields = {"delivery": "abc", "status": 202}
    parsed = orjson.loads(JsonFormatter().format(line))
    assert parsed["level"] == "info"
    assert parsed["logger"] == "hookstream.ingress.delivery"
    assert (parsed["msg"], parsed["delivery"], parsed["status"]) == (
        "delivery accepted",
        "abc",
        202,
    )


@pytest.mark.parametrize("message", [
    "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
    "Marking the coordinator dead (node 1)for group hookstream-triggers.",
])  # fmt: skip
def test_a_new_brokers_coordinator_election_is_debug_not_error(message: str) -> None:
    noisy = record("aiokafka.consumer.group_coordinator", logging.ERROR, message)
    assert DemoteStartupNoise(logging.INFO).filter(noisy) is False
    shown = record("aiokafka.consumer.group_coordinator", logging.ERROR, message)
    assert DemoteStartupNoise(logging.DEBUG).filter(shown) is True
    assert (shown.levelno, shown.levelname) == (logging.DEBUG, "DEBUG")


def test_other_client_errors_and_our_own_lines_are_untouched() -> None:
    real = record("aiokafka.consumer.fetcher", logging.ERROR, "Unexpected error in fetcher")
    assert DemoteStartupNoise(logging.INFO).filter(real) is True
    assert real.levelno == logging.ERROR
    ours = record("hookstream.triggers", logging.WARNING, "Group Coordinator Request failed")
    assert DemoteStartupNoise(logging.INFO).filter(ours) is True
    assert ours.levelno == logging.WARNING
