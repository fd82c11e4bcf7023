"""``make bench-insights``: events/s projected into ClickHouse, its two ceilings, view latency.

1. N corpus-derived deliveries (unique ids, 100 repositories) are written to a fresh
   topic of the real broker.
2. Ceiling "Kafka": aiokafka reads the topic without processing.
3. Ceiling "sink": in a separate process, the rows of the same deliveries are extracted
   and only the inserts are timed (batches of the worker's size, chdb). One batch is
   held at a time, so N may be in the millions.
4. The worker (``hookstream worker insights``) projects the topic; timed until
   ``deliveries`` holds N rows. With ``--baseline-tree DIR`` a worker run from another
   checkout's packages (say ``git archive HEAD``) projects the same topic first, into
   its own store and consumer group: before and after, in one run.
5. View latency: M deliveries' fact rows (the ``deliveries`` table, which no view reads,
   is left out to keep the run's disk use bounded) are inserted into a fresh engine,
   then every view is queried repeatedly; p50 and max are reported (``--view-events 0``
   skips this part).

Disk: about 11 KB a delivery in Kafka (11 GB for 1,000,000), plus each store's
compressed payloads; the temporary directory is removed at the end.

Usage: python -m tests.bench.insights [--events 1000000] [--view-events 1000000]
       [--baseline-tree DIR] [--no-replay]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import TopicPartition

from deploy import corpus
from deploy.commands import hookstream_argv
from projections.query import QueryServiceUnavailable, query_service
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs
from tests.bench.broker_io import Outgoing, bulk_consumer, send_all
from tests.helpers import CACHE_DIR, free_port_pair, local_broker, processor_env

VIEWS = ("dora_deployment_frequency", "dora_lead_time", "dora_change_failure_rate",
         "dora_time_to_restore", "pr_flow", "ci_health")  # fmt: skip
RECEIVED = b"2026-11-26T04:00:00+00:00"


def deliveries(n: int) -> Iterator[tuple[str, bytes, bytes]]:
    """(event, body, delivery id) for n deliveries spread over 100 repositories."""
    examples = [e for e in corpus.load(CACHE_DIR) if isinstance(e.payload.get("repository"), dict)]
    for i in range(n):
        example = examples[i % len(examples)]
        payload = copy.deepcopy(example.payload)
        repo = i % 100
        payload["repository"].update(id=10_000 + repo, full_name=f"org/repo{repo}")
        for part in ("pull_request", "issue", "deployment", "workflow_run", "check_run",
                     "release", "review", "deployment_status", "workflow_job"):  # fmt: skip
            if isinstance(payload.get(part), dict) and "id" in payload[part]:
                payload[part]["id"] = i
                if "number" in payload[part]:
                    payload[part]["number"] = i
        yield example.event, orjson.dumps(payload), f"bench-{i}".encode()


def headers(event: str, delivery: bytes) -> list[tuple[str, bytes]]:
    return [(RecordHeader.EVENT, event.encode()), (RecordHeader.DELIVERY, delivery),
            (RecordHeader.HOOK_ID, b"1"), (RecordHeader.RECEIVED_AT, RECEIVED)]  # fmt: skip


async def produce(settings: Settings, n: int) -> None:
    await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
    records = (
        Outgoing(settings.events_topic, body, key=delivery[-2:], headers=headers(event, delivery))
        for event, body, delivery in deliveries(n)
    )
    await send_all(settings.kafka_bootstrap, records, linger_ms=20, max_batch_size=1 << 20,
                   compression_type=None)  # fmt: skip


async def kafka_ceiling(settings: Settings, n: int) -> float:
    consumer = bulk_consumer(settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.events_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started, seen = time.perf_counter(), 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


SINK_CEILING = """
import asyncio, sys, time
from processors.insights.rows import InsightRows, insight_rows
from projections.sink import ClickHouseSink
from schemas.envelope import Envelope
from tests.bench.insights import deliveries, headers

n, batch, path, skip_deliveries = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def batches():
    rows = InsightRows()
    for i, (event, body, delivery) in enumerate(deliveries(n), start=1):
        rows.extend(insight_rows(Envelope.from_record(headers(event, delivery), body)))
        if skip_deliveries == "1":
            rows.tables.pop("deliveries", None)
        if i % batch == 0 or i == n:
            yield rows
            rows = InsightRows()

async def main():
    sink = ClickHouseSink(f"chdb://{path}", "^(prod|production)$", "(?i)^incident$")
    await sink.start()
    inserting = 0.0  # only the inserts are timed; a batch is built between two
    for k, b in enumerate(batches()):
        started = time.perf_counter()
        await sink.write(b.tables, f"bench-{k}")
        inserting += time.perf_counter() - started
    print(n / inserting, flush=True)
    if len(sys.argv) > 5:
        for view in sys.argv[5].split(","):
            times = []
            for _ in range(5):
                t = time.perf_counter()
                await sink.run(lambda c: c.query(f"SELECT * FROM {view}").result_rows)
                times.append(time.perf_counter() - t)
            print(view, sorted(times)[2], max(times), flush=True)
    sink.close()

asyncio.run(main())
"""


def sink_ceiling(n: int, batch: int, path: Path, views: tuple[str, ...] = ()) -> list[str]:
    args = [sys.executable, "-c", SINK_CEILING, str(n), str(batch), str(path),
            "1" if views else "0"]  # fmt: skip
    if views:
        args.append(",".join(views))
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=3600)
    return out.stdout.split("\n")


async def count(port: int) -> int:
    try:
        result = await query_service(port, "SELECT count() FROM deliveries")
    except QueryServiceUnavailable:
        return 0
    return int(result.rows[0][0])


def worker_env(settings: Settings, workdir: Path, name: str, port: int) -> dict[str, str]:
    """The environment of the worker called ``name``: its own store and consumer group."""
    worker_settings = settings.model_copy(
        update={"data_dir": workdir / name, "group_prefix": f"{settings.group_prefix}-{name}"}
    )
    return processor_env(worker_settings, HOOKSTREAM_QUERY_PORT=str(port))


def worker_rate(
    settings: Settings, n: int, workdir: Path, name: str = "worker", tree: Path | None = None
) -> float:
    """Events/s of ``hookstream worker insights`` (from ``tree``'s packages if given)."""
    port = free_port_pair()
    env = worker_env(settings, workdir, name, port)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree.resolve()), env.get("PYTHONPATH", "")])
    with (workdir / f"{name}.log").open("wb") as log:
        worker = subprocess.Popen([*hookstream_argv(), "worker", "insights"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            started = None
            shown, shown_at = 0, time.perf_counter()
            while True:
                done = asyncio.run(count(port))
                if started is None and done > 0:
                    started, first = time.perf_counter(), done
                if done >= n:
                    assert started is not None
                    return (n - first) / (time.perf_counter() - started)
                if time.perf_counter() - shown_at >= 30:  # a long run shows how it goes
                    rate = (done - shown) / (time.perf_counter() - shown_at)
                    print(f"{name}: {done:,} of {n:,} ({rate:,.0f}/s over the last 30 s)",
                          file=sys.stderr, flush=True)  # fmt: skip
                    shown, shown_at = done, time.perf_counter()
                time.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait()


def replay_rate(settings: Settings, n: int, workdir: Path, name: str = "worker") -> float:
    """Events/s of ``hookstream replay insights`` over the worker's n records, end to end:
    from the plan to the swap, the replay worker's start included."""
    env = worker_env(settings, workdir, name, free_port_pair())
    with (workdir / f"{name}-replay.log").open("wb") as log:
        started = time.perf_counter()
        subprocess.run([*hookstream_argv(), "replay", "insights"], env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=4 * 3600)  # fmt: skip
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--view-events", type=int, default=1_000_000)
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="first time a worker run from this checkout's packages")  # fmt: skip
    parser.add_argument("--no-replay", dest="replay", action="store_false",
                        help="skip timing `hookstream replay insights`")  # fmt: skip
    args = parser.parse_args()
    corpus.fetch(CACHE_DIR)
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-") as tmp:
        workdir = Path(tmp)
        broker = local_broker(workdir / "broker", heap="512m")
        broker.up()
        try:
            suffix = uuid.uuid4().hex[:8]
            settings = Settings(kafka_bootstrap=broker.bootstrap,
                                events_topic=f"bench.events.{suffix}",
                                group_prefix=f"bench-{suffix}")  # fmt: skip
            started = time.perf_counter()
            asyncio.run(produce(settings, args.events))
            print(f"produced {args.events:,} deliveries in {time.perf_counter() - started:.0f} s")
            kafka = asyncio.run(kafka_ceiling(settings, args.events))
            sink = float(sink_ceiling(args.events, settings.sink_batch_rows, workdir / "sink")[0])
            shutil.rmtree(workdir / "sink")
            baseline = None
            if args.baseline_tree is not None:
                baseline = worker_rate(settings, args.events, workdir, "baseline",
                                       args.baseline_tree)  # fmt: skip
                shutil.rmtree(workdir / "baseline")
            worker = worker_rate(settings, args.events, workdir)
            replay = replay_rate(settings, args.events, workdir) if args.replay else None
        finally:
            broker.down()
        slower = min(kafka, sink)
        print("| path | events/s | ratio to the slower ceiling |")
        print("| --- | ---: | ---: |")
        print(f"| aiokafka read, no processing (ceiling) | {kafka:,.0f} | |")
        print(f"| sink inserts only, no Kafka (ceiling) | {sink:,.0f} | |")
        if baseline is not None:
            print(f"| insights worker from {args.baseline_tree}, Kafka to ClickHouse "
                  f"| {baseline:,.0f} | {baseline / slower:.2f} |")  # fmt: skip
        print(f"| insights worker, Kafka to ClickHouse | {worker:,.0f} | {worker / slower:.2f} |")
        if replay is not None:
            print(f"| `hookstream replay insights`, plan to swap | {replay:,.0f} "
                  f"| {replay / slower:.2f} |")  # fmt: skip

        if args.view_events <= 0:
            return
        lines = sink_ceiling(args.view_events, 10_000, workdir / "views", VIEWS)
        print(f"\nviews over {args.view_events:,} deliveries "
              f"(fact rows inserted at {float(lines[0]):,.0f} events/s)")  # fmt: skip
        print("| view | p50 ms | max ms (5 runs) |")
        print("| --- | ---: | ---: |")
        for line in lines[1:]:
            if line.strip():
                view, p50, worst = line.split()
                print(f"| {view} | {float(p50) * 1000:.0f} | {float(worst) * 1000:.0f} |")


if __name__ == "__main__":
    main()
