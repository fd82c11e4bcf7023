"""``make bench-ingress``: sustained deliveries/s and latency of the ingress, real broker.

wrk, in its own process, posts signed corpus payloads (a Lua script gives every request
a fresh delivery GUID; the signature covers only the body, so bodies are signed once).
In the same run and with the same load, wrk also hits a bare aiohttp handler that only
answers 202: the ceiling of this machine. The ratio of the two is the figure that
survives a noisy machine. Afterwards the topic is read back to check that every 202 is
a record in Kafka.

Usage: python -m tests.bench.ingress [--seconds 20] [--connections 64] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from deploy import corpus
from deploy.broker import LocalBroker
from deploy.commands import hookstream_argv
from schemas.settings import Settings
from schemas.signature import sign
from tests.helpers import CACHE_DIR, free_port_pair, local_broker, read_topic, unique_topic

SECRET = "bench-secret"

BARE_SERVER = textwrap.dedent(
    """
    import asyncio, sys, uvloop
    from aiohttp import web

    async def accept(request):
        await request.read()
        return web.json_response({"delivery": request.headers["X-GitHub-Delivery"]}, status=202)

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/webhooks/github", accept)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), reuse_port=True,
                access_log=None, print=None)
    """
)


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def lua_script(workdir: Path, examples: tuple[corpus.Example, ...]) -> Path:
    """A wrk script cycling through the corpus with a fresh GUID per request."""
    entries = []
    for example in examples:
        body = example.body.decode()
        level = "=" * 8
        assert f"]{level}]" not in body
        entries.append(
            f'{{event="{example.event}", sig="{sign(example.body, SECRET.encode())}", '
            f"body=[{level}[{body}]{level}]}}"
        )
    script = workdir / "deliveries.lua"
    script.write_text(
        "local deliveries = {\n"
        + ",\n".join(entries)
        + "\n}\n"
        + textwrap.dedent(
            """
            local counter = 0
            local prefix = ""
            local threads = 0
            function setup(thread)
              threads = threads + 1
              thread:set("tid", threads)
            end
            function init(args)
              -- distinct per thread and per run, so GUIDs never repeat
              prefix = string.format("%08x", (os.time() * 64 + tid) % 4294967296)
            end
            function request()
              counter = counter + 1
              local d = deliveries[(counter % #deliveries) + 1]
              local headers = {}
              headers["Content-Type"] = "application/json"
              headers["X-GitHub-Event"] = d.event
              headers["X-GitHub-Hook-ID"] = "1"
              headers["X-GitHub-Delivery"] = string.format(
                "%s-0000-4000-8000-%012x", prefix, counter)
              headers["X-Hub-Signature-256"] = d.sig
              return wrk.format("POST", nil, headers, d.body)
            end
            """
        )
    )
    return script


_LAT = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[WrkResult, int]:
    """The measured run, and how many requests were answered 2xx in it and its warm-up."""
    # Warm-up: the broker's JIT, the producer's connections and batches, page cache.
    warm = _wrk(url, script, 4, connections)
    measured = _wrk(url, script, seconds, connections)
    ok = sum(r.requests - r.non_2xx for r in (warm, measured))
    return measured, ok


def _wrk(url: str, script: Path, seconds: int, connections: int) -> WrkResult:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requests = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert requests, out
    duration = float(requests.group(2)) * {"s": 1, "m": 60, "ms": 0.001}[requests.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {m.group(1): float(m.group(2)) * _UNIT[m.group(3)] for m in _LAT.finditer(out)}
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=duration,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
        p50_ms=lat["50"],
        p90_ms=lat["90"],
        p99_ms=lat["99"],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def wait_ready(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


async def server_quantiles(metrics_url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
        text = await response.text()
    bucket = re.compile(r'hookstream_ingress_ack_seconds_bucket\{le="([\d.e+-]+)"\} ([\d.e+]+)')
    buckets = [(float(m.group(1)), float(m.group(2))) for m in bucket.finditer(text)]
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "n/a"
    marks = []
    for q in (0.5, 0.99):
        bound = next(le for le, count in buckets if count >= q * total)
        marks.append(f"p{int(q * 100)} <= {bound * 1000:g} ms")
    return ", ".join(marks)


def measure_bare(script: Path, seconds: int, connections: int, workers: int) -> WrkResult:
    port = free_port()
    processes = [
        subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)]) for _ in range(workers)
    ]
    try:
        wait_for_port(port)
        time.sleep(0.5 * workers)
        return run_wrk(f"http://127.0.0.1:{port}/webhooks/github", script, seconds, connections)[0]
    finally:
        for p in processes:
            p.terminate()
            p.wait()


def measure_ingress(
    settings: Settings, script: Path, seconds: int, connections: int
) -> tuple[WrkResult, str, int, int]:
    env = dict(
        os.environ,
        HOOKSTREAM_WEBHOOK_SECRETS=SECRET,
        HOOKSTREAM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HOOKSTREAM_EVENTS_TOPIC=settings.events_topic,
        HOOKSTREAM_EVENTS_PARTITIONS=str(settings.events_partitions),
        HOOKSTREAM_INGRESS_PORT=str(settings.ingress_port),
        HOOKSTREAM_INGRESS_WORKERS=str(settings.ingress_workers),
        HOOKSTREAM_KAFKA_LINGER_MS=str(settings.kafka_linger_ms),
    )
    process = subprocess.Popen([*hookstream_argv(), "ingress"], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{settings.ingress_port}"
    try:
        wait_for_port(settings.ingress_port)
        asyncio.run(wait_ready(f"{base}/readyz"))
        time.sleep(0.5 * settings.ingress_workers)  # every worker connected
        result, accepted = run_wrk(f"{base}/webhooks/github", script, seconds, connections)
        server = asyncio.run(server_quantiles(f"{base}/metrics"))
    finally:
        process.terminate()
        process.wait()
    stored = len(asyncio.run(read_topic(settings)))
    return result, server, accepted, stored


def row(name: str, r: WrkResult, extra: str = "") -> str:
    return (
        f"| {name} | {r.rate:,.0f} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | {r.p99_ms:.1f} "
        f"| {r.non_2xx + r.errors} | {extra} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", default="1,2", help="ingress process counts to measure")
    parser.add_argument("--linger-ms", type=int, default=Settings().kafka_linger_ms)
    args = parser.parse_args()
    examples = corpus.load(CACHE_DIR) if corpus.corpus_dir(CACHE_DIR).exists() else ()
    if not examples:
        corpus.fetch(CACHE_DIR)
        examples = corpus.load(CACHE_DIR)
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-") as tmp:
        workdir = Path(tmp)
        script = lua_script(workdir, examples)
        broker: LocalBroker = local_broker(workdir / "data", heap="512m")
        broker.up()
        try:
            print(
                f"corpus: {len(examples)} payloads, mean body "
                f"{sum(len(e.body) for e in examples) / len(examples) / 1024:.1f} KiB; "
                f"wrk -t2 -c{args.connections} -d{args.seconds}s; cores: {os.cpu_count()}"
            )
            print("| target | deliveries/s | p50 ms | p90 ms | p99 ms | errors | notes |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
            for workers in (int(w) for w in args.workers.split(",")):
                bare = measure_bare(script, args.seconds, args.connections, workers)
                print(row(f"bare aiohttp 202, {workers} proc", bare, "ceiling"), flush=True)
                settings = Settings(
                    kafka_bootstrap=broker.bootstrap,
                    events_topic=unique_topic(),
                    events_partitions=6,
                    ingress_port=free_port_pair(),
                    ingress_workers=workers,
                    kafka_linger_ms=args.linger_ms,
                    webhook_secrets=SECRET,
                )
                result, server, accepted, stored = measure_ingress(
                    settings, script, args.seconds, args.connections
                )
                note = (
                    f"ratio {result.rate / bare.rate:.2f}; server-side ack {server}; "
                    f"{stored} records in Kafka for {accepted} answered 202 (incl. warm-up)"
                )
                print(row(f"hookstream ingress, {workers} proc", result, note), flush=True)
                if stored < accepted:
                    raise SystemExit(f"LOST: {accepted - stored} acknowledged deliveries missing")
        finally:
            broker.down()


if __name__ == "__main__":
    main()
