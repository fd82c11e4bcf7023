"""The ClickHouse engine in its own process (``ClickHouseSink(own_process=True)``).

No broker: the sink and its child process only. This test process never opens a chdb
path itself (chdb binds one per process); every engine here lives in a child.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from projections.engine import EngineError
from projections.query import QueryError, QueryResult, run_readonly
from projections.rebuild import SUFFIX
from projections.sink import ClickHouseSink, NotStaged
from tests.helpers import REPO_ROOT, running

PATTERNS = ("^(prod|production)$", "(?i)^incident$")


def delivery(i: int) -> dict[str, Any]:
    return {
        "delivery_id": f"d-{i}", "hook_id": "1", "event": "push", "action": "",
        "received_at": datetime(2026, 11, 26, tzinfo=UTC), "repository": "org/repo",
        "repository_id": 1, "organization": "org", "sender_id": 2, "sender_login": "octocat",
        "installation_id": 3, "payload": b'{"zen": "x"}',
    }  # fmt: skip


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[ClickHouseSink]:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'insights'}", *PATTERNS, own_process=True)
    await sink.start()
    yield sink
    sink.close()


async def count(sink: ClickHouseSink, table: str = "deliveries") -> int:
    result = await sink.run(run_readonly, f"SELECT count() FROM {table}")
    return int(result.rows[0][0])


class Unpicklable(Exception):
    def __init__(self, a: str, b: str) -> None:  # two arguments: pickle cannot rebuild it
        super().__init__(f"{a} {b}")


def fails_with_unpicklable(client: Client) -> None:
    raise Unpicklable("engine", "trouble")


def child_pid(client: Client) -> int:
    return os.getpid()


async def test_writes_then_reads_through_the_engine_process(sink: ClickHouseSink) -> None:
    assert await sink.write({"deliveries": [delivery(1), delivery(2)]}, "batch-1") == 2
    assert await count(sink) == 2
    result = await sink.run(run_readonly, "SELECT delivery_id FROM deliveries ORDER BY 1")
    assert result == QueryResult(["delivery_id"], [["d-1"], ["d-2"]])
    # The same batch again (a retry after a timeout): its dedup tokens keep it single.
    await sink.write({"deliveries": [delivery(1), delivery(2)]}, "batch-1")
    assert await count(sink) == 2
    assert await sink.run(child_pid) not in (os.getpid(), None)


async def test_staged_rows_are_written_only_when_all_chunks_arrived(
    sink: ClickHouseSink,
) -> None:
    for chunk in ([delivery(1)], [delivery(2), delivery(3)]):
        staging = sink.stage("batch-a", {"deliveries": chunk})
        assert staging is not None
        await staging
    with pytest.raises(NotStaged, match="2 of 3 chunks"):
        await sink.write_staged("batch-a", 3, "a")
    assert await count(sink) == 0  # nothing of a short batch; its rows are dropped
    staging = sink.stage("batch-b", {"deliveries": [delivery(4), delivery(5)]})
    assert staging is not None
    await staging
    assert await sink.write_staged("batch-b", 1, "b") == 2
    assert await count(sink) == 2


async def test_errors_come_back_as_exceptions(sink: ClickHouseSink) -> None:
    with pytest.raises(QueryError) as refused:
        await sink.run(run_readonly, "SELECT * FROM no_such_table")
    assert "no_such_table" in str(refused.value)
    assert "Traceback" not in str(refused.value)  # ClickHouse's message, first line
    with pytest.raises(QueryError, match="readonly"):
        await sink.run(run_readonly, "DROP TABLE deliveries")
    with pytest.raises(EngineError, match="Unpicklable: engine trouble"):
        await sink.run(fails_with_unpicklable)
    with pytest.raises(Exception, match="pickle"):  # a closure cannot travel
        await sink.run(lambda client: client.query("SELECT 1"))
    assert await count(sink) == 0  # and the engine still answers


async def test_a_killed_engine_process_is_replaced(sink: ClickHouseSink) -> None:
    await sink.write({"deliveries": [delivery(1)]}, "batch-1")
    staging = sink.stage("split", {"deliveries": [delivery(2)]})
    assert staging is not None
    await staging
    first = await sink.run(child_pid)
    os.kill(first, signal.SIGKILL)
    engine = sink._process
    assert engine is not None
    # Gone once reaped: the thread-group leader is a zombie before all its threads exit.
    while engine.is_alive():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    # The next call starts a successor, which never saw the first chunk: the batch is
    # refused whole rather than written in part.
    staging = sink.stage("split", {"deliveries": [delivery(3)]})
    assert staging is not None
    await staging
    with pytest.raises(NotStaged, match="1 of 2 chunks"):
        await sink.write_staged("split", 2, "split")
    assert await sink.run(child_pid) != first
    assert await count(sink) == 1  # the data is the path's, not the process's


async def test_a_replay_writes_beside_and_swaps_in_through_the_process(
    sink: ClickHouseSink,
) -> None:
    await sink.write({"deliveries": [delivery(1)]}, "live")
    await sink.rebuild_beside(fresh=True)
    assert sink.suffix == SUFFIX
    await sink.write({"deliveries": [delivery(2), delivery(3)]}, "rebuilt")
    assert (await count(sink), await count(sink, f"deliveries{SUFFIX}")) == (1, 2)
    await sink.swap_in()
    assert sink.suffix == ""
    assert await count(sink) == 2


PARENT = """
import asyncio, sys, time
from projections.sink import ClickHouseSink

def pid(client):
    import os
    return os.getpid()

async def main():
    sink = ClickHouseSink(sys.argv[1], "^prod$", "(?i)^incident$", own_process=True)
    await sink.start()
    print(await sink.run(pid), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_the_engine_process_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    dsn = f"chdb://{tmp_path / 'insights'}"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    parent = subprocess.Popen(  # noqa: ASYNC220 (killed, never awaited)
        [sys.executable, str(script), dsn], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert parent.stdout is not None
        child = int(await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 120))
        assert running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert not running(child), "the engine process outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
    # The path is free again: a new engine opens it.
    sink = ClickHouseSink(dsn, *PATTERNS, own_process=True)
    try:
        await sink.start()
        assert await count(sink) == 0
    finally:
        sink.close()
