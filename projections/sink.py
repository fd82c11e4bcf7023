"""The batching sink: insight rows into ClickHouse through clickhouse-connect.

The same code serves the embedded engine (``chdb:///path``) and a server
(``http(s)://…``). clickhouse-connect's client is synchronous, and chdb allows one engine
per process, so every call into it — inserts and the read-only queries the worker
serves — goes through one dedicated thread, :attr:`ClickHouseSink.executor`. With
``own_process`` (the insights worker) the client itself lives in a child process
(:mod:`projections.engine`) and that thread only hands calls to it: the worker's Python
work and the inserts' column serialization then run side by side instead of taking
turns on one interpreter. Calls are module-level functions and their arguments
(:meth:`ClickHouseSink.run`), since they travel by pickle.

Each flush of a batch carries an ``insert_deduplication_token`` per table derived from
the Kafka offsets it covers, so an insert retried after a timeout is not doubled;
rows written twice by a replay collapse in the ``ReplacingMergeTree`` tables.

In its own process the engine can also take a batch's rows ahead of its write
(:meth:`ClickHouseSink.stage`, while the batch is still being built), so that a write
is only the insert: handing 10,000 deliveries (~110 MB) to the process at write time
would otherwise add the pickling and the copy through the pipe to every write.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from projections.engine import EngineProcess
from projections.migrate import migrate
from projections.rebuild import SUFFIX, prepare_statements, swap_statements
from schemas.errors import HookstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Rows by table name; a row maps column names to values.
Tables = Mapping[str, Sequence[Mapping[str, Any]]]


def connect(dsn: str) -> Client:
    return clickhouse_connect.get_client(dsn=dsn)


class NotStaged(HookstreamError):
    """The engine does not hold all of a batch's staged rows (say, it was restarted)."""


class Engine:
    """What owns the client: the sink's thread, or the engine process (picklable unopened).

    Connects and migrates on first use. ``suffix`` is appended to every table a write
    names: ``__replay`` while a replay rebuilds. It lives here, beside the client, so a
    write and a swap are ordered by the one place that runs them. ``staged`` holds rows
    sent ahead of their batch's write, by batch key: (chunks received, rows by table).
    """

    def __init__(self, dsn: str, patterns: tuple[str, str]) -> None:
        self.dsn = dsn
        self.patterns = patterns
        self.suffix = ""
        self.staged: dict[str, tuple[int, dict[str, list[Mapping[str, Any]]]]] = {}
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            client = connect(self.dsn)
            migrate(client, *self.patterns)
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "patterns": self.patterns, "suffix": self.suffix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dsn"], state["patterns"])  # type: ignore[misc]
        self.suffix = state["suffix"]


# The calls the sink makes on its engine: module-level, so they can travel by pickle.
def open_engine(engine: Engine) -> None:
    engine.client  # noqa: B018 (connects and migrates)


def run_on_client(
    engine: Engine,
    function: Callable[Concatenate[Client, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    return function(engine.client, *args, **kwargs)


def write_tables(engine: Engine, tables: Tables, batch_id: str) -> int:
    named = {f"{table}{engine.suffix}": rows for table, rows in tables.items()}
    return insert_tables(engine.client, named, batch_id)


def stage_rows(engine: Engine, key: str, tables: Tables) -> None:
    chunks, staged = engine.staged.get(key, (0, {}))
    for table, rows in tables.items():
        staged.setdefault(table, []).extend(rows)
    engine.staged[key] = (chunks + 1, staged)


def write_staged(engine: Engine, key: str, chunks: int, batch_id: str) -> int:
    """Write what :func:`stage_rows` collected under ``key``, if all ``chunks`` arrived."""
    received, tables = engine.staged.pop(key, (0, {}))
    if received != chunks:
        raise NotStaged(f"batch {key}: {received} of {chunks} chunks staged")
    return write_tables(engine, {table: rows for table, rows in tables.items() if rows}, batch_id)


def drop_staged(engine: Engine, key: str) -> None:
    engine.staged.pop(key, None)


def prepare_replay(engine: Engine, fresh: bool) -> str:
    for statement in prepare_statements(fresh):
        engine.client.command(statement)
    engine.suffix = SUFFIX
    return engine.suffix


def swap_replay(engine: Engine) -> str:
    for statement in swap_statements():
        engine.client.command(statement)
    engine.suffix = ""
    return engine.suffix


class ClickHouseSink:
    def __init__(
        self,
        dsn: str,
        production_pattern: str,
        incident_pattern: str,
        *,
        own_process: bool = False,
    ) -> None:
        self.dsn = dsn
        # The engine's suffix as last set (see Engine.suffix).
        self.suffix = ""
        self.own_process = own_process
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._engine = Engine(dsn, (production_pattern, incident_pattern))
        self._process: EngineProcess[Engine] | None = None

    async def _on_engine(
        self,
        function: Callable[Concatenate[Engine, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._call, function, *args, **kwargs)
        return await loop.run_in_executor(self.executor, call)

    def _call(
        self,
        function: Callable[Concatenate[Engine, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        if not self.own_process:
            return function(self._engine, *args, **kwargs)
        if self._process is None or not self._process.is_alive():
            if self._process is not None:
                log.warning("the ClickHouse engine process exited; starting a new one")
                self._process.close(timeout=0)
            self._engine.suffix = self.suffix  # a new process picks up where the last was
            self._process = EngineProcess(self._engine, name="hookstream-clickhouse")
        return self._process.call(function, *args, **kwargs)

    async def run(
        self,
        function: Callable[Concatenate[Client, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``function(client, *args, **kwargs)`` where the client lives.

        With ``own_process`` the function and its arguments go to the engine process by
        pickle: pass a module-level function (say :func:`projections.query.run_readonly`
        and its SQL), not a closure. Its exception is raised here.
        """
        return await self._on_engine(run_on_client, function, *args, **kwargs)

    async def start(self) -> None:
        await self._on_engine(open_engine)

    async def write(self, tables: Tables, batch_id: str) -> int:
        """Insert every table's rows; returns the number of rows written."""
        non_empty = {table: rows for table, rows in tables.items() if rows}
        if not non_empty:
            return 0
        return await self._on_engine(write_tables, non_empty, batch_id)

    def stage(self, key: str, tables: Tables) -> asyncio.Future[None] | None:
        """Send rows of the batch ``key`` ahead of its write, without waiting.

        Only in its own process (else None: there is nothing to save). The write is
        :meth:`write_staged` with the number of chunks staged; the caller keeps the rows,
        to write them whole (:meth:`write`) should the staged write fail.
        """
        if not self.own_process:
            return None
        non_empty = {table: rows for table, rows in tables.items() if rows}
        call = functools.partial(self._call, stage_rows, key, non_empty)
        return asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def write_staged(self, key: str, chunks: int, batch_id: str) -> int:
        """Insert the rows staged under ``key``; raises :class:`NotStaged` unless all
        ``chunks`` are there (nothing is written then)."""
        return await self._on_engine(write_staged, key, chunks, batch_id)

    async def drop_staged(self, key: str) -> None:
        await self._on_engine(drop_staged, key)

    async def rebuild_beside(self, fresh: bool) -> None:
        """Write into fresh ``__replay`` tables from now on (kept if ``fresh`` is false)."""
        self.suffix = await self._on_engine(prepare_replay, fresh)

    async def swap_in(self) -> None:
        """Exchange the rebuilt tables with the live ones, in one call on the engine."""
        self.suffix = await self._on_engine(swap_replay)

    def close(self) -> None:
        def close_engine() -> None:
            if self._process is not None:
                self._process.close()
            self._engine.close()

        self.executor.submit(close_engine).result()
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
