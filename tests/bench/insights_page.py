"""``make bench-insights-page``: the insights page's load time at N deliveries (issue 10).

1. A server process (chdb allows one engine per process) inserts the rows of N
   corpus-derived deliveries (:func:`tests.bench.insights.deliveries`, 100 repositories)
   through the sink into a fresh chdb store, in batches of the worker's size, timing only
   the inserts. The ``deliveries`` table is kept, since the page reads it for its list of
   repositories, but with empty payloads: the page never reads them and they would only
   cost disk. Once the engine's background merges are done, the queries of
   :func:`report_queries` for the full-history window run on the engine, ten rounds of
   all of them in the API's order, each query timed.
   Then the process serves :func:`insights_app` on 127.0.0.1 as the insights worker does
   (the sink's engine thread behind it), until its standard input closes.
2. This process is the browser: per window, 3 warm-up page loads and then M timed ones,
   each ``GET /insights``, its script, its stylesheet and ``GET /insights/api/dora`` one
   after the other over one keep-alive session, bodies read in full, no cache. Windows:
   the page's default (the last 90 days), the longest window the API accepts (3,660
   days, which holds the whole corpus), and that window for one repository. Every API
   answer is checked: 200, the expected repositories, and facts in the window.

Usage: python -m tests.bench.insights_page [--events 1000000] [--loads 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client

from deploy import corpus
from processors.insights.rows import InsightRows, insight_rows
from projections.dora_bands import Metric
from projections.insights_page import insights_app
from projections.insights_report import MAX_DAYS, Patterns, ReportFilters, report_queries
from projections.query import QueryResult, run_readonly
from projections.sink import ClickHouseSink
from schemas.envelope import Envelope
from schemas.settings import Settings
from tests.bench.insights import deliveries, headers
from tests.bench.merges import wait_for_merges
from tests.helpers import CACHE_DIR, REPO_ROOT

PATTERNS = Patterns("^(prod|production)$", "(?i)^incident$")
REPOSITORIES = 100
ONE_REPOSITORY = "org/repo7"
WARM_UP = 3
QUERY_ROUNDS = 10
GOAL_P50, GOAL_P99 = 0.300, 1.0
ASSETS = ("/insights", "/insights/static/insights.js", "/insights/static/insights.css")
API = "/insights/api/dora"


def full_window(today: date) -> tuple[date, date]:
    return today - timedelta(days=MAX_DAYS - 1), today


# --- the server process ---------------------------------------------------------------------
def emit(*fields: object) -> None:
    print(*fields, flush=True)


def readonly_query(sql: str) -> Callable[[Client], QueryResult]:
    def call(client: Client) -> QueryResult:
        return run_readonly(client, sql)

    return call


async def build(sink: ClickHouseSink, n: int, batch: int) -> None:
    started, inserting, rows = time.perf_counter(), 0.0, InsightRows()
    for i, (event, body, delivery) in enumerate(deliveries(n), start=1):
        produced = insight_rows(Envelope.from_record(headers(event, delivery), body))
        for row in produced.tables["deliveries"]:
            row["payload"] = b""
        rows.extend(produced)
        if i % batch == 0 or i == n:
            before = time.perf_counter()
            await sink.write(rows.tables, f"page-{i}")
            inserting += time.perf_counter() - before
            rows = InsightRows()
    emit("built", n, time.perf_counter() - started, n / inserting)


async def settle(sink: ClickHouseSink) -> None:
    started = time.perf_counter()
    await wait_for_merges(sink, limit_s=300.0)
    parts = await sink.run(
        lambda c: c.query("SELECT count() FROM system.parts WHERE active").result_rows
    )
    emit("settled", time.perf_counter() - started, int(parts[0][0]))


async def time_queries(sink: ClickHouseSink, rounds: int = QUERY_ROUNDS) -> None:
    """Runs the API's queries in its order, round after round, the first round untimed."""
    start, end = full_window(datetime.now(UTC).date())
    queries = report_queries(ReportFilters(None, start, end))
    times: dict[str, list[float]] = {str(name): [] for name in queries}
    rows: dict[str, int] = {}
    for round_ in range(rounds + 1):
        for name, sql in queries.items():
            before = time.perf_counter()
            result = await sink.run(readonly_query(sql))
            if round_:
                times[str(name)].append(time.perf_counter() - before)
            rows[str(name)] = len(result.rows)
    for name, spent in times.items():
        emit("query", name, statistics.median(spent), max(spent), rows[name])


async def serve(path: Path, n: int, batch: int) -> None:
    sink = ClickHouseSink(f"chdb://{path}", PATTERNS.production, PATTERNS.incident)
    await sink.start()
    runner = web.AppRunner(insights_app(sink.run, PATTERNS), access_log=None)
    try:
        await build(sink, n, batch)
        await settle(sink)
        await time_queries(sink)
        await runner.setup()
        # Bound here, not picked by the client, so no other process can take it meanwhile.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(runner, listener).start()
        emit("port", listener.getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    finally:
        await runner.cleanup()
        sink.close()


# --- the client -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    label: str
    params: dict[str, str]
    repositories: int
    holds_facts: bool


@dataclass
class Timings:
    loads: list[float] = field(default_factory=list)
    api: list[float] = field(default_factory=list)
    requests: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Contents:
    """What one window's answer holds: the facts the page aggregates."""

    deployments: int
    changes: int
    incidents: int
    pull_requests: int
    ci_runs: int
    kib: float

    @classmethod
    def of(cls, document: Mapping[str, Any], size: int) -> Contents:
        def total(metric: Metric) -> int:
            return sum(int(entry[metric.value]["count"]) for entry in document["dora"])

        return cls(
            deployments=total(Metric.DEPLOYMENT_FREQUENCY),
            changes=total(Metric.LEAD_TIME),
            incidents=total(Metric.TIME_TO_RESTORE),
            pull_requests=int(document["flow"]["pull_requests"]),
            ci_runs=sum(int(w["runs"]) for w in document["ci"]["workflows"]),
            kib=size / 1024,
        )

    @property
    def facts(self) -> int:
        return self.deployments + self.incidents + self.pull_requests + self.ci_runs


async def get(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[float, bytes]:
    before = time.perf_counter()
    async with session.get(url, params=params) as response:
        body = await response.read()
        assert response.status == 200, (url, response.status, body[:200])
    return time.perf_counter() - before, body


async def page_load(
    session: aiohttp.ClientSession, base: str, window: Window, timings: Timings | None
) -> Contents:
    before = time.perf_counter()
    spent: dict[str, float] = {}
    for path in ASSETS:
        spent[path], _ = await get(session, base + path)
    spent[API], body = await get(session, base + API, **window.params)
    total = time.perf_counter() - before
    document = orjson.loads(body)
    repositories = [entry["repository"] for entry in document["dora"]]
    assert len(repositories) == window.repositories, (window.label, len(repositories))
    if "repository" in window.params:
        assert repositories == [window.params["repository"]], repositories
    if timings is not None:
        timings.loads.append(total)
        timings.api.append(spent[API])
        for path, seconds in spent.items():
            timings.requests.setdefault(path, []).append(seconds)
    return Contents.of(document, len(body))


async def measure(
    port: int, windows: list[Window], loads: int
) -> list[tuple[Window, Timings, Contents]]:
    base = f"http://127.0.0.1:{port}"
    measured = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for window in windows:
            for _ in range(WARM_UP):
                contents = await page_load(session, base, window, None)
            assert contents.facts > 0 or not window.holds_facts, (window.label, contents)
            timings = Timings()
            for _ in range(loads):
                await page_load(session, base, window, timings)
            measured.append((window, timings, contents))
    return measured


def p(values: list[float], percent: int) -> float:
    """Percentile, linear between the nearest ranks (statistics' "inclusive" method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def read_until_port(out: IO[str]) -> tuple[int, dict[str, list[str]], list[list[str]]]:
    facts: dict[str, list[str]] = {}
    queries: list[list[str]] = []
    for line in out:
        if not line.strip():
            continue
        kind, *rest = line.split()
        if kind == "port":
            return int(rest[0]), facts, queries
        if kind == "query":
            queries.append(rest)
        else:
            facts[kind] = rest
    raise RuntimeError("the server process ended before serving")


def report(
    n: int,
    loads: int,
    facts: Mapping[str, list[str]],
    queries: list[list[str]],
    measured: list[tuple[Window, Timings, Contents]],
) -> None:
    # The machine is shared: a busy neighbour shows here, not in the timings' shape.
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    _, built, rate = facts["built"]
    settled, parts = facts["settled"]
    print(f"\nstore: {n:,} deliveries built in {float(built):.0f} s, rows inserted at "
          f"{float(rate):,.0f} deliveries/s; merges settled after {float(settled):.0f} s, "
          f"{int(parts):,} active parts; load average after the loads {load}")  # fmt: skip

    print("\nwhat each window holds (from the API's answer):")
    print("| window | deployments | changes | incidents | PRs opened | CI runs | API answer KiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for window, _, c in measured:
        print(f"| {window.label} | {c.deployments:,} | {c.changes:,} | {c.incidents:,} | "
              f"{c.pull_requests:,} | {c.ci_runs:,} | {c.kib:,.0f} |")  # fmt: skip

    print(f"\npage load at {n:,} deliveries ({loads} loads per window after {WARM_UP} warm-up "
          "loads; a load = page, script, stylesheet and API call in sequence):")  # fmt: skip
    print("| window | page load p50 ms | p99 ms | max ms | API p50 ms | API p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for window, t, _ in measured:
        print(f"| {window.label} | {ms(p(t.loads, 50))} | {ms(p(t.loads, 99))} | "
              f"{ms(max(t.loads))} | {ms(p(t.api, 50))} | {ms(p(t.api, 99))} |")  # fmt: skip
    worst50 = max(p(t.loads, 50) for _, t, _ in measured)
    worst99 = max(p(t.loads, 99) for _, t, _ in measured)
    met = worst50 <= GOAL_P50 and worst99 <= GOAL_P99
    print(f"\nGoal (issue 10): page load p50 ≤ {ms(GOAL_P50)} ms, p99 ≤ {ms(GOAL_P99)} ms at "
          f"{n:,} deliveries — **{'met' if met else 'not met'}** (worst window: p50 "
          f"{ms(worst50)} ms, p99 {ms(worst99)} ms).")  # fmt: skip

    print("\nstatic requests, p50 ms per window:")
    print("| window | " + " | ".join(ASSETS) + " |")
    print("| --- |" + " ---: |" * len(ASSETS))
    for window, t, _ in measured:
        cells = " | ".join(f"{p(t.requests[path], 50) * 1000:.1f}" for path in ASSETS)
        print(f"| {window.label} | {cells} |")

    print(f"\nthe API's {len(queries)} queries on the engine, window (b), in the server "
          f"process before serving ({QUERY_ROUNDS} rounds after an untimed one):")  # fmt: skip
    print("| query | p50 ms | max ms | rows |")
    print("| --- | ---: | ---: | ---: |")
    for name, median, worst, rows in queries:
        print(f"| {name} | {ms(float(median))} | {ms(float(worst))} | {int(rows):,} |")
    total = sum(float(median) for _, median, _, _ in queries)
    print(f"| (sum) | {ms(total)} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=50)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch = Settings.model_fields["sink_batch_rows"].default
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.events, batch))
        return

    corpus.fetch(CACHE_DIR)
    start, end = full_window(datetime.now(UTC).date())
    full = {"from": start.isoformat(), "to": end.isoformat()}
    windows = [
        Window("(a) last 90 days (default), all repositories", {}, REPOSITORIES, False),
        Window(f"(b) {start} to {end}, all repositories", full, REPOSITORIES, True),
        Window(f"(c) {start} to {end}, {ONE_REPOSITORY}",
               full | {"repository": ONE_REPOSITORY}, 1, True),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-page-") as tmp:
        argv = [sys.executable, "-m", "tests.bench.insights_page", "--events", str(args.events),
                "--serve", str(Path(tmp) / "page")]  # fmt: skip
        started = time.perf_counter()
        server = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.stdout is not None
            port, facts, queries = read_until_port(server.stdout)
            print(f"server ready on port {port} after {time.perf_counter() - started:.0f} s")
            measured = asyncio.run(measure(port, windows, args.loads))
        finally:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    report(args.events, args.loads, facts, queries, measured)


if __name__ == "__main__":
    main()
