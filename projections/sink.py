"""The batching sink: insight rows into ClickHouse through clickhouse-connect.

The same code serves the embedded engine (``chdb:///path``) and a server
(``http(s)://…``). Inserts run on one dedicated thread: clickhouse-connect's chdb client
is synchronous, and chdb allows one engine per process, so every call into it — inserts
and the read-only queries the worker serves — goes through :attr:`ClickHouseSink.executor`.

Each flush of a batch carries an ``insert_deduplication_token`` per table derived from
the Kafka offsets it covers, so an insert retried after a timeout is not doubled;
rows written twice by a replay collapse in the ``ReplacingMergeTree`` tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from projections.migrate import migrate
from projections.rebuild import SUFFIX, prepare_statements, swap_statements

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows by table name; a row maps column names to values.
Tables = Mapping[str, Sequence[Mapping[str, Any]]]


def connect(dsn: str) -> Client:
    return clickhouse_connect.get_client(dsn=dsn)


class ClickHouseSink:
    def __init__(self, dsn: str, production_pattern: str, incident_pattern: str) -> None:
        self.dsn = dsn
        # Appended to every table a write names: "__replay" while a replay rebuilds.
        self.suffix = ""
        self._patterns = (production_pattern, incident_pattern)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None

    async def run(self, call: Callable[[Client], T]) -> T:
        """Run ``call(client)`` on the ClickHouse thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._call, call)

    def _call(self, call: Callable[[Client], T]) -> T:
        if self._client is None:
            self._client = connect(self.dsn)
            migrate(self._client, *self._patterns)
        return call(self._client)

    async def start(self) -> None:
        await self.run(lambda client: None)

    async def write(self, tables: Tables, batch_id: str) -> int:
        """Insert every table's rows; returns the number of rows written."""
        non_empty = {table: rows for table, rows in tables.items() if rows}
        if not non_empty:
            return 0
        named = {f"{table}{self.suffix}": rows for table, rows in non_empty.items()}
        return await self.run(lambda client: insert_tables(client, named, batch_id))

    async def rebuild_beside(self, fresh: bool) -> None:
        """Write into fresh ``__replay`` tables from now on (kept if ``fresh`` is false)."""

        def prepare(client: Client) -> None:
            for statement in prepare_statements(fresh):
                client.command(statement)
            self.suffix = SUFFIX

        await self.run(prepare)

    async def swap_in(self) -> None:
        """Exchange the rebuilt tables with the live ones, in one call on the engine thread."""

        def swap(client: Client) -> None:
            for statement in swap_statements():
                client.command(statement)
            self.suffix = ""

        await self.run(swap)

    def close(self) -> None:
        if self._client is not None:
            self.executor.submit(self._client.close).result()
        self.executor.shutdown(wait=True)


def dedup_token(batch_id: str, table: str) -> str:
    return hashlib.sha256(f"{batch_id}\x1f{table}".encode()).hexdigest()


def insert_tables(client: Client, tables: Tables, batch_id: str) -> int:
    written = 0
    for table, rows in tables.items():
        columns = list(rows[0])
        client.insert(
            table,
            [[row[c] for c in columns] for row in rows],
            column_names=columns,
            settings={"insert_deduplication_token": dedup_token(batch_id, table)},
        )
        written += len(rows)
    return written
