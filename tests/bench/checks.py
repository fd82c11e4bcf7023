"""``make bench-checks``: check-run transitions/s through the worker, and GitHub calls per run.

N dispatch requests and, for each, an ``in_progress`` and a ``completed`` runner report
are written to the real broker; the checks worker (``hookstream worker checks`` in its
own process) mirrors them to the local fake GitHub, which validates every request
against the OpenAPI description and answers at once. Timed from the worker's start
until all N runs are completed on the fake. Reported: transitions/s (3 per run), the
fake's requests per run (goal: exactly 3 — create, in_progress, completed), and the
installation-token requests (goal: one per installation per hour).

Usage: python -m tests.bench.checks [--runs 500] [--installations 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from schemas.topics import ensure_topics, topic_specs
from tests.fake_github.credentials import APP_ID, PRIVATE, PUBLIC
from tests.fake_github.server import FakeGitHub
from tests.helpers import CACHE_DIR, local_broker, make_settings, processor_env


async def main(runs: int, installations: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    broker = local_broker(workdir / "kafka")
    broker.up()
    fake = FakeGitHub(CACHE_DIR, APP_ID, PUBLIC)
    server = TestServer(fake.application(), host="127.0.0.1")
    await server.start_server()
    try:
        settings = make_settings(broker.bootstrap, workdir)
        await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
        ids = [str(uuid.uuid4()) for _ in range(runs)]
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            for i, dispatch in enumerate(ids):
                request = {
                    "dispatch_id": dispatch, "workflow": "ci", "trigger": "bench",
                    "repository": f"acme/repo{i % 50}", "repository_id": i % 50,
                    "sha": f"{i:040x}", "actor": {"github_id": 1},
                    "delivery": {"hook_id": "1", "delivery_id": f"g{i}", "event": "push"},
                    "installation_id": 1 + i % installations, "check_name": "ci",
                    "requested_at": "2026-11-26T09:00:00Z",
                }  # fmt: skip
                await producer.send(settings.dispatch_topic, orjson.dumps(request),
                                    key=dispatch.encode())  # fmt: skip
            for status in ("in_progress", "completed"):
                for i, dispatch in enumerate(ids):
                    report = {"status": status, "run_id": f"r{i}", "dispatch_id": dispatch,
                              "received_at": "2026-11-26T09:01:00Z"}  # fmt: skip
                    if status == "completed":
                        report["conclusion"] = "success"
                    await producer.send(settings.run_status_topic, orjson.dumps(report),
                                        key=f"r{i}".encode())  # fmt: skip
            await producer.flush()
        finally:
            await producer.stop()
        key = workdir / "app.pem"
        key.write_text(PRIVATE)
        env = processor_env(
            settings, HOOKSTREAM_GITHUB_APP_ID=str(APP_ID),
            HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE=str(key),
            HOOKSTREAM_GITHUB_API_URL=str(server.make_url("")).rstrip("/"),
        )  # fmt: skip
        started = time.perf_counter()
        first: float | None = None
        worker = await asyncio.create_subprocess_exec(*hookstream_argv("worker", "checks"),
                                                      env=env)  # fmt: skip
        try:
            while sum(r["status"] == "completed" for r in fake.check_runs.values()) < runs:
                if worker.returncode is not None:
                    raise SystemExit(f"the worker exited with {worker.returncode}")
                if first is None and fake.check_runs:
                    first = time.perf_counter()
                await asyncio.sleep(0.05)
            done = time.perf_counter()
        finally:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 60)
        elapsed, steady = done - started, done - (first or started)
        calls = fake.calls()
        tokens = sum(c.endpoint == "token" for c in calls)
        per_run = (len(calls) - tokens) / runs
        print(f"runs: {runs}, installations: {installations}, violations: {len(fake.violations)}")
        rate, overall = 3 * runs / steady, 3 * runs / elapsed
        print(f"transitions/s once the first run appeared: {rate:,.0f} "
              f"({overall:,.0f} with the worker's start-up; {elapsed:.1f} s in all)")  # fmt: skip
        print(f"GitHub requests per run: {per_run:.2f} (goal 3); token requests: {tokens} "
              f"(goal {installations}: one per installation per hour)")  # fmt: skip
        by_endpoint: dict[str, int] = {}
        for call in calls:
            by_endpoint[call.endpoint] = by_endpoint.get(call.endpoint, 0) + 1
        print(f"by endpoint: {dict(sorted(by_endpoint.items()))}")
    finally:
        await server.close()
        broker.down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--installations", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.installations))
