"""Read-only SQL over the insight tables: the service the worker runs, and the client.

In embedded mode the insights worker owns the chdb data path (one engine per process),
so it serves ``POST /query`` on ``127.0.0.1:$HOOKSTREAM_QUERY_PORT`` and ``hookstream sql``
goes through it; with no worker running the CLI opens the path itself. Every query runs
with ClickHouse's ``readonly = 1``: INSERT, ALTER, DROP, CREATE and SET are refused by
the engine itself, not by parsing SQL here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import aiohttp
import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.errors import HookstreamError

READONLY = {"readonly": 1}
MAX_ROWS = 100_000

T = TypeVar("T")
P = ParamSpec("P")


class QueryError(HookstreamError):
    """ClickHouse refused or failed the query; the message is ClickHouse's."""


class QueryServiceUnavailable(HookstreamError):
    """No worker serves queries on the port (embedded mode falls back to the path)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


def run_readonly(client: Client, sql: str) -> QueryResult:
    try:
        result = client.query(sql, settings=READONLY)
    except ClickHouseError as exc:
        raise QueryError(_clean(str(exc))) from None
    return QueryResult(list(result.column_names), [list(r) for r in result.result_rows[:MAX_ROWS]])


def run_readonly_many(client: Client, queries: Mapping[str, str]) -> dict[str, QueryResult]:
    """Several read-only queries in one call on the engine: results by name."""
    return {name: run_readonly(client, sql) for name, sql in queries.items()}


def _clean(message: str) -> str:
    # ClickHouse appends a stack trace and version noise after the first sentence.
    first = message.strip().splitlines()[0] if message.strip() else message
    return first.split(" (version ")[0]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError


def to_json(result: QueryResult) -> bytes:
    return orjson.dumps({"columns": result.columns, "rows": result.rows}, default=_json_default)


def from_json(raw: bytes) -> QueryResult:
    doc = orjson.loads(raw)
    return QueryResult(doc["columns"], doc["rows"])


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(result: QueryResult, fmt: str) -> str:
    if fmt == "json":
        return "\n".join(
            orjson.dumps(
                dict(zip(result.columns, row, strict=True)), default=_json_default
            ).decode()
            for row in result.rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([["" if v is None else _cell(v) for v in row] for row in result.rows])
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [
        max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(result.columns)
    ]
    lines = [_line(result.columns, widths), "-+-".join("-" * w for w in widths)]
    lines += [_line(row, widths) for row in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(lines)


def _line(values: Sequence[str], widths: list[int]) -> str:
    return " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


# --- the service the worker runs ----------------------------------------------------------
class Runner(Protocol):
    """Runs ``function(client, *args, **kwargs)`` where the engine's client lives
    (:meth:`projections.sink.ClickHouseSink.run`): on the engine's thread, or in the
    engine's own process, where the function and its arguments travel by pickle — so a
    module-level function and plain arguments, not a closure."""

    def __call__(
        self,
        function: Callable[Concatenate[Client, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Awaitable[T]: ...


RUNNER: web.AppKey[Runner] = web.AppKey("runner")


async def _query(request: web.Request) -> web.Response:
    sql = (await request.text()).strip()
    if not sql:
        return web.json_response({"error": "empty query"}, status=400)
    try:
        result = await request.app[RUNNER](run_readonly, sql)
    except QueryError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.Response(body=to_json(result), content_type="application/json")


def query_app(runner: Runner) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[RUNNER] = runner
    app.router.add_post("/query", _query)
    return app


async def query_service(port: int, sql: str, seconds: float = 300.0) -> QueryResult:
    """Ask the worker's query service; raises QueryServiceUnavailable when none listens."""
    url = f"http://127.0.0.1:{port}/query"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.post(url, data=sql.encode()) as response,
        ):
            body = await response.read()
            if response.status == 400:
                raise QueryError(orjson.loads(body)["error"])
            response.raise_for_status()
            return from_json(body)
    except aiohttp.ClientConnectorError:
        raise QueryServiceUnavailable(url) from None
