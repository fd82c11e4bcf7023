"""What a worker prints: JSON lines only, and Faust's own lines only when asked for."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.settings import Settings
from schemas.topics import retry_topic
from tests.helpers import WorkerProcess, eventually, make_settings, processor_env

pytestmark = pytest.mark.integration


async def run_until_assigned(
    tmp_path: Path, bootstrap: str, level: str
) -> tuple[Settings, list[dict[str, object]]]:
    settings = make_settings(bootstrap, tmp_path)
    log = tmp_path / f"worker-{level}.log"
    worker = WorkerProcess("triggers", processor_env(settings, HOOKSTREAM_LOG_LEVEL=level), log)
    await worker.start()
    try:

        async def assigned() -> bool:
            return "worker owns" in log.read_text()

        await eventually(assigned, "the worker's assignment line", 90)
    finally:
        await worker.stop()
    lines = log.read_text().splitlines()
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return settings, parsed


async def test_debug_shows_faust_and_kafka_client_lines(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    _, lines = await run_until_assigned(tmp_path, kafka_bootstrap, "DEBUG")
    loggers = {str(line["logger"]).split(".")[0] for line in lines}
    assert {"faust", "mode", "aiokafka", "hookstream"} <= loggers
    assert any(line["msg"] == "[^Worker]: Ready" for line in lines)


async def test_info_keeps_to_hookstreams_own_lines_and_client_warnings(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings, lines = await run_until_assigned(tmp_path, kafka_bootstrap, "INFO")
    [owns] = [line for line in lines if "worker owns" in str(line["msg"])]
    assert (owns["logger"], owns["level"], owns["processor"]) == (
        "hookstream.worker",
        "info",
        "triggers",
    )
    # Each source with its retry topic (`hookstream dlq retry`), partitioned alike.
    topics = [
        topic
        for source in (settings.events_topic, settings.dispatch_topic)
        for topic in (source, retry_topic(source, "triggers"))
    ]
    partitions = owns["partitions"]
    assert isinstance(partitions, list)
    assert sorted(partitions) == sorted(f"{t}/{p}" for t in topics for p in range(3))
    for line in lines:
        if str(line["logger"]).startswith(("faust", "mode", "aiokafka")):
            assert line["level"] in ("warning", "error", "critical"), line
