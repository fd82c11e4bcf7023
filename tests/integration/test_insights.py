"""The insights worker end to end: ingress, real broker, Faust worker, chdb engine.

The worker runs as ``hookstream worker insights`` in its own process and owns its chdb
path; the tests read through its read-only query service, as ``hookstream sql`` does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from deploy.corpus import Example
from deploy.send import signed_delivery
from processors.dead_letter import ERROR_HEADER
from projections.query import QueryError, QueryServiceUnavailable, query_service
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from tests.helpers import (
    SECRET,
    RunningIngress,
    eventually,
    free_port_pair,
    processor_env,
    read_topic,
)
from tests.integration.insights_scenario import EXPECTED, Scenario, normalise, snapshot

pytestmark = pytest.mark.integration


@dataclass
class InsightsWorker:
    settings: Settings
    data_dir: Path
    group_prefix: str
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None

    def env(self) -> dict[str, str]:
        settings = self.settings.model_copy(
            update={"data_dir": self.data_dir, "group_prefix": self.group_prefix}
        )
        return processor_env(
            settings,
            HOOKSTREAM_QUERY_PORT=str(self.port),
            HOOKSTREAM_SINK_FLUSH_S="0.2",
            HOOKSTREAM_SINK_BATCH_ROWS=str(self.settings.sink_batch_rows),
        )

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *hookstream_argv(), "worker", "insights",
            env=self.env(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            await asyncio.wait_for(self.process.wait(), 60)

    async def sql(self, query: str) -> list[list[Any]]:
        return (await query_service(self.port, query)).rows

    async def scalar(self, query: str) -> Any:
        try:
            return (await self.sql(query))[0][0]
        except QueryServiceUnavailable:
            return None

    async def wait_for_count(self, expected: int, within: float = 120.0) -> None:
        await eventually(
            lambda: _equals(self.scalar("SELECT count() FROM deliveries FINAL"), expected),
            f"{expected} deliveries projected (log: {self.log})",
            within,
        )


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool((await value) == expected)


def new_worker(settings: Settings, tmp_path: Path, name: str) -> InsightsWorker:
    return InsightsWorker(
        settings, tmp_path / name, f"test-{uuid.uuid4().hex[:8]}", free_port_pair(),
        tmp_path / f"{name}.log",
    )  # fmt: skip


@pytest.fixture
async def worker(ingress: RunningIngress, tmp_path: Path) -> AsyncIterator[InsightsWorker]:
    running = new_worker(ingress.settings, tmp_path, "worker")
    await running.start()
    yield running
    await running.stop()


async def test_the_whole_corpus_lands_once_per_delivery(
    ingress: RunningIngress, worker: InsightsWorker, examples: tuple[Example, ...]
) -> None:
    for example in examples:
        delivery = signed_delivery(example.body, example.event, SECRET)
        assert (await ingress.post(delivery))[0] == 202
    await worker.wait_for_count(len(examples))
    rows = await worker.sql("SELECT event, count() FROM deliveries FINAL GROUP BY event")
    by_event = dict((event, n) for event, n in rows)
    assert sum(by_event.values()) == len(examples)
    assert by_event["pull_request"] == sum(e.event == "pull_request" for e in examples)
    # Every corpus payload fits the models: nothing is dead-lettered.
    assert await read_topic(ingress.settings, ingress.settings.dlq_topic) == []
    assert await worker.scalar("SELECT count() FROM pull_requests FINAL") >= 1


async def test_scenario_metrics_redelivery_and_replay(
    ingress: RunningIngress, worker: InsightsWorker, examples: tuple[Example, ...],
    tmp_path: Path,
) -> None:  # fmt: skip
    scenario = Scenario(examples)
    sent = [signed_delivery(body, event, SECRET) for event, body in scenario.deliveries]
    for delivery in sent:
        assert (await ingress.post(delivery))[0] == 202
    # Every delivery again, as GitHub's redelivery does: same GUID, same body.
    for delivery in sent:
        assert (await ingress.post(delivery))[0] == 202
    await worker.wait_for_count(len(sent))
    for query, expected in EXPECTED.items():
        assert normalise(await worker.sql(query)) == expected, query
    first = await snapshot(worker.sql)

    # The whole topic replayed into fresh tables by a second worker: the same answers.
    fresh = new_worker(ingress.settings, tmp_path, "replay")
    await fresh.start()
    try:
        await fresh.wait_for_count(len(sent))
        assert await snapshot(fresh.sql) == first
    finally:
        await fresh.stop()


async def test_a_poison_record_is_dead_lettered_and_the_stream_goes_on(
    ingress: RunningIngress, worker: InsightsWorker, examples: tuple[Example, ...]
) -> None:
    settings = ingress.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        # A pull_request delivery whose pull_request is not an object: the extractor fails.
        await producer.send_and_wait(
            settings.events_topic, b'{"action": "opened", "number": 1, "pull_request": 5}',
            key=b"1",
            headers=[(RecordHeader.EVENT, b"pull_request"), (RecordHeader.DELIVERY, b"poison")],
        )  # fmt: skip
    finally:
        await producer.stop()
    after = [e for e in examples if e.event in ("push", "issues")][:5]
    for example in after:
        assert (await ingress.post(signed_delivery(example.body, example.event, SECRET)))[0] == 202
    await worker.wait_for_count(len(after))
    [dead] = await read_topic(settings, settings.dlq_topic)
    headers = dict(dead.headers)
    assert headers[RecordHeader.DELIVERY] == b"poison"
    assert b"ValidationError" in headers[ERROR_HEADER]
    assert headers["x-hookstream-processor"] == b"insights"


async def test_sigkill_mid_stream_loses_and_doubles_nothing(
    ingress: RunningIngress, tmp_path: Path, examples: tuple[Example, ...]
) -> None:
    settings = ingress.settings
    total = 20_000
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        body = next(e for e in examples if e.name == "push#5").body
        for i in range(total):
            await producer.send(
                settings.events_topic, body, key=str(i % 50).encode(),
                headers=[(RecordHeader.EVENT, b"push"), (RecordHeader.HOOK_ID, b"1"),
                         (RecordHeader.DELIVERY, f"kill-{i}".encode())],
            )  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()
    worker = new_worker(settings, tmp_path, "killed")
    worker.settings = settings.model_copy(update={"sink_batch_rows": 500})
    await worker.start()

    seen = [0]

    async def some_written() -> bool:
        seen[0] = await worker.scalar("SELECT count() FROM deliveries") or 0
        return seen[0] > 0

    await eventually(some_written, "the first rows", 120)
    await worker.stop(signal.SIGKILL)
    assert worker.process is not None
    assert worker.process.returncode == -signal.SIGKILL
    assert 0 < seen[0] < total  # killed in the middle of the stream
    await worker.start()
    try:
        await worker.wait_for_count(total)
        assert await worker.scalar("SELECT uniqExact(delivery_id) FROM deliveries") == total
        assert await worker.scalar("SELECT count() FROM commits FINAL") == 1
    finally:
        await worker.stop()


@pytest.mark.parametrize("statement", [
    "INSERT INTO deliveries (delivery_id) VALUES ('x')",
    "ALTER TABLE deliveries DELETE WHERE 1",
    "DROP TABLE deliveries",
    "CREATE TABLE evil (x UInt8) ENGINE = Memory",
])  # fmt: skip
async def test_sql_refuses_writes_through_the_worker(
    worker: InsightsWorker, statement: str
) -> None:
    await eventually(lambda: _is_up(worker), "the query service", 60)
    with pytest.raises(QueryError, match="readonly"):
        await worker.sql(statement)
    assert await worker.scalar("SELECT count() FROM system.tables WHERE name = 'evil'") == 0


async def _is_up(worker: InsightsWorker) -> bool:
    return bool(await worker.scalar("SELECT 1") == 1)


def test_sql_cli_direct_mode_reads_and_refuses_writes(tmp_path: Path) -> None:
    env = dict(os.environ, HOOKSTREAM_DATA_DIR=str(tmp_path), HOOKSTREAM_QUERY_PORT="1")

    def sql(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*hookstream_argv(), "sql", *args],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    # No worker owns the path: the CLI opens it itself. The schema is made in another
    # process, as a worker would: chdb binds one data path per process, and this test
    # process must not take one.
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from projections.sink import connect; from projections.migrate "
         "import migrate; migrate(connect(sys.argv[1]), '^prod$', '(?i)^incident$')",
         f"chdb://{tmp_path / 'insights'}"],
        check=True, timeout=120,
    )  # fmt: skip
    ok = sql("SELECT count() AS n FROM deliveries", "--format", "csv")
    assert (ok.returncode, ok.stdout.strip()) == (0, "n\n0"), ok.stderr
    table = sql("SELECT 1 AS one, 'x' AS letter")
    assert table.stdout.splitlines()[:3] == ["one | letter", "----+-------", "1   | x"]
    for statement in ("INSERT INTO deliveries (delivery_id) VALUES ('x')",
                      "ALTER TABLE deliveries DELETE WHERE 1", "DROP TABLE deliveries",
                      "CREATE TABLE evil (x UInt8) ENGINE = Memory"):  # fmt: skip
        refused = sql(statement)
        assert refused.returncode == 1
        assert "readonly" in refused.stderr
    assert sql("SELECT count() FROM deliveries", "--format", "json").stdout.strip() == (
        '{"count()":0}'
    )
    assert orjson.loads(sql("SELECT 2 AS two", "--format", "json").stdout) == {"two": 2}


@pytest.mark.skipif(
    os.environ.get("HOOKSTREAM_TEST_DOCKER") != "1",
    reason="the ClickHouse server path needs HOOKSTREAM_TEST_DOCKER=1 and a Docker engine",
)
def test_server_dsn_runs_the_same_schema_and_readonly_rules() -> None:
    from testcontainers.community.clickhouse import ClickHouseContainer

    from projections.migrate import migrate
    from projections.query import run_readonly
    from projections.sink import connect

    with ClickHouseContainer("clickhouse/clickhouse-server:25.8") as server:
        host, port = server.get_container_host_ip(), server.get_exposed_port(8123)
        client = connect(f"http://{server.username}:{server.password}@{host}:{port}/default")
        migrate(client, "^prod$", "(?i)^incident$")
        assert run_readonly(client, "SELECT count() FROM deliveries").rows == [[0]]
        with pytest.raises(QueryError, match="readonly"):
            run_readonly(client, "DROP TABLE deliveries")


async def test_replay_rebuilds_the_tables_from_the_log(
    ingress: RunningIngress, tmp_path: Path, examples: tuple[Example, ...]
) -> None:
    worker = new_worker(ingress.settings, tmp_path, "original")
    sample = examples[:40]
    for example in sample:
        assert (await ingress.post(signed_delivery(example.body, example.event, SECRET)))[0] == 202
    await worker.start()
    try:
        await worker.wait_for_count(len(sample))
    finally:
        await worker.stop()
    # Lose the read model entirely, then rebuild it from the log alone.
    shutil.rmtree(worker.data_dir / "insights")
    env = worker.env()
    replay = await asyncio.create_subprocess_exec(
        *hookstream_argv(), "replay", "insights",
        env=env, stdout=worker.log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert await asyncio.wait_for(replay.wait(), 240) == 0, worker.log.read_text()[-3000:]
    # No worker runs now: `hookstream sql` opens the rebuilt path itself.
    sql = await asyncio.create_subprocess_exec(
        *hookstream_argv(), "sql",
        "SELECT count() AS n, uniqExact(delivery_id) AS u FROM deliveries FINAL",
        "--format", "json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(sql.communicate(), 120)
    assert sql.returncode == 0, err.decode()
    assert orjson.loads(out) == {"n": len(sample), "u": len(sample)}
