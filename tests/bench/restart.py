"""``make bench-restart``: how long a triggers worker takes to come back with N emitted ids.

The triggers worker remembers every dispatch id it ever emitted (a Faust table whose
changelog never expires). With tables in memory, every start re-reads that whole
changelog; with RocksDB (the default), a restart reads only what was written since the
store's last flush. Measured side by side in one run, on one broker:

1. N ids are written to the worker's changelog topic (as the worker itself would have,
   spread over its partitions), then one matching push delivery to ``github.events``.
2. For each store (``memory://``, ``rocksdb://``): start the worker, time until that push's
   dispatch reaches ``hookstream.dispatch`` (start-up, recovery, the first match), stop it,
   and for RocksDB start it once more — the restart — and time that too (a new push each
   time, so each start has something new to dispatch).

Usage: python -m tests.bench.restart [--ids 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from schemas.topics import TopicSpec, ensure_topics, topic_specs
from tests.bench.broker_io import Outgoing, send_all
from tests.helpers import local_broker, processor_env, read_topic, sample_payload

TRIGGERS = 'workflows:\n  build:\n    on: ["github:*/*:push"]\n    check: false\n'
CHANGELOG = "emitted-dispatches-changelog"


async def fill_changelog(settings: Settings, ids: int) -> None:
    topic = f"{settings.app_id('triggers')}-{CHANGELOG}"
    specs = [*topic_specs(settings), TopicSpec(topic, settings.events_partitions, 1,
                                               {"cleanup.policy": "compact,delete",
                                                "retention.ms": "-1"})]  # fmt: skip
    await ensure_topics(settings.kafka_bootstrap, specs)
    # Faust's table codec for bytes keys and values: raw bytes.
    records = (Outgoing(topic, b"1", key=str(uuid.UUID(int=i)).encode(),
                        partition=i % settings.events_partitions) for i in range(ids))  # fmt: skip
    await send_all(settings.kafka_bootstrap, records, window=20_000, linger_ms=50,
                   max_batch_size=1 << 20)  # fmt: skip


async def push(settings: Settings, n: int) -> None:
    payload = sample_payload("push")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        headers = [(RecordHeader.EVENT, b"push"), (RecordHeader.DELIVERY, f"restart-{n}".encode()),
                   (RecordHeader.HOOK_ID, b"1"),
                   (RecordHeader.RECEIVED_AT, b"2026-11-26T04:00:00+00:00")]  # fmt: skip
        await producer.send_and_wait(settings.events_topic, orjson.dumps(payload),
                                     key=str(n).encode(), headers=headers)  # fmt: skip
    finally:
        await producer.stop()


async def dispatched(settings: Settings) -> int:
    return len(await read_topic(settings, settings.dispatch_topic, settings.dispatch_partitions))


def start_to_dispatch(settings: Settings, store: str, workdir: Path, n: int) -> float:
    """Seconds from the worker's start to the dispatch of push number ``n``."""
    asyncio.run(push(settings, n))
    env = processor_env(settings, HOOKSTREAM_FAUST_STORE=store,
                        HOOKSTREAM_TRIGGERS_FILE=str(workdir / "triggers.yml"))  # fmt: skip
    with (workdir / f"worker-{store[:6]}-{n}.log").open("wb") as log:
        started = time.perf_counter()
        worker = subprocess.Popen([*hookstream_argv(), "worker", "triggers"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            while asyncio.run(dispatched(settings)) < n:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                time.sleep(0.5)
            return time.perf_counter() - started
        finally:
            worker.terminate()
            worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-restart-") as tmp:
        workdir = Path(tmp)
        (workdir / "triggers.yml").write_text(TRIGGERS)
        broker = local_broker(workdir / "broker", heap="512m")
        broker.up()
        try:
            results = []
            for store in ("memory://", "rocksdb://"):
                suffix = uuid.uuid4().hex[:8]
                settings = Settings(
                    kafka_bootstrap=broker.bootstrap, data_dir=workdir / store[:6],
                    events_topic=f"bench.events.{suffix}",
                    dispatch_topic=f"bench.dispatch.{suffix}", group_prefix=f"bench-{suffix}",
                )  # fmt: skip
                started = time.perf_counter()
                asyncio.run(fill_changelog(settings, args.ids))
                print(f"{store}: wrote {args.ids:,} emitted ids in "
                      f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
                first = start_to_dispatch(settings, store, workdir, 1)
                again = start_to_dispatch(settings, store, workdir, 2)
                results.append((store, first, again))
        finally:
            broker.down()
    print(f"\nA triggers worker with {args.ids:,} emitted ids: start to first dispatch")
    print("| store | first start | restart |")
    print("| --- | ---: | ---: |")
    for store, first, again in results:
        print(f"| `{store}` | {first:.1f} s | {again:.1f} s |")


if __name__ == "__main__":
    main()
