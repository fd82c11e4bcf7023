"""``make bench-triggers``: matcher throughput with 1,000 rules, and dispatches/s end to end.

1. The pure matcher over corpus payloads whose repositories are rewritten to hit the
   rules, with 10 and with 1,000 rules side by side; once including the JSON parse of
   each payload (what the worker pays), once on pre-parsed envelopes.
2. The worker (``hookstream worker triggers`` in its own process) against the real
   broker: N matching deliveries written to the log, timed until N dispatches are on
   ``hookstream.dispatch``; then N deliveries that match nothing, timed until the
   worker's committed offsets reach the end of the log.

Usage: python -m tests.bench.triggers [--events 20000] [--e2e 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy import corpus
from deploy.commands import hookstream_argv
from processors.triggers.matcher import Matcher
from processors.triggers.rules import parse_trigger_file
from schemas.envelope import Envelope, RecordHeader
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs
from tests.helpers import CACHE_DIR, local_broker, processor_env


def rules_yaml(count: int) -> str:
    lines = ["workflows:"]
    for i in range(count):
        kind = i % 10
        lines.append(f"  wf-{i}:")
        if kind < 6:
            lines += [
                "    on:",
                f"      - event: github:org{i % 50}/repo{i}:push.branch",
                "        branches: [main, 'release/*']",
            ]
        elif kind < 8:
            lines.append(f"    on: ['github:org{i % 50}/*:pull_request.merged']")
        elif kind < 9:
            lines += [
                "    on:",
                "      - event: github:*/*:pull_request.opened",
                f"        labels: [team-{i}]",
            ]
        else:
            lines += ["    commands:", f"      - command: cmd{i}"]
    return "\n".join(lines) + "\n"


def workload(examples: tuple[corpus.Example, ...], n: int) -> list[tuple[str, bytes]]:
    """``n`` (event, body) pairs from the corpus, spread over org{0..49}/repo{0..999}."""
    out = []
    usable = [e for e in examples if isinstance(e.payload.get("repository"), dict)]
    for i in range(n):
        example = usable[i % len(usable)]
        payload = copy.deepcopy(example.payload)
        payload["repository"]["full_name"] = f"org{i % 50}/repo{i % 1000}"
        if example.event == "push":
            payload.update(ref="refs/heads/main", deleted=False)
        out.append((example.event, orjson.dumps(payload)))
    return out


def envelope(event: str, body: bytes, i: int) -> Envelope:
    headers = [(RecordHeader.EVENT, event.encode()), (RecordHeader.DELIVERY, str(i).encode())]
    return Envelope.from_record(headers, body)


def bench_matcher(events: list[tuple[str, bytes]]) -> None:
    print("| rules | parse + match, events/s | match only, events/s | dispatches |")
    print("| ---: | ---: | ---: | ---: |")
    for count in (10, 1000):
        matcher = Matcher(parse_trigger_file(rules_yaml(count)))
        started = time.perf_counter()
        dispatched = sum(
            len(matcher.match(envelope(ev, body, i)).dispatches)
            for i, (ev, body) in enumerate(events)
        )
        with_parse = len(events) / (time.perf_counter() - started)
        parsed = [envelope(ev, body, i) for i, (ev, body) in enumerate(events)]
        for env in parsed:
            _ = env.payload
        started = time.perf_counter()
        for env in parsed:
            matcher.match(env)
        only = len(events) / (time.perf_counter() - started)
        print(f"| {count} | {with_parse:,.0f} | {only:,.0f} | {dispatched:,} |", flush=True)


async def produce(
    settings: Settings,
    records: Sequence[tuple[str, bytes, bytes | None]],
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.events_topic,
                body,
                key=key,
                partition=partition,
                headers=[
                    (RecordHeader.EVENT, event.encode()),
                    (RecordHeader.DELIVERY, str(uuid.uuid4()).encode()),
                    (RecordHeader.HOOK_ID, b"1"),
                ],
            )
            for event, body, key in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def topic_size(settings: Settings, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def wait_for(check: Any, within: float = 600.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await asyncio.sleep(0.1)


MATCHING = orjson.dumps(
    {"repository": {"id": 7, "full_name": "org0/repo0"}, "ref": "refs/heads/main",
     "after": "a" * 40, "commits": []}
)  # fmt: skip
NOT_MATCHING = orjson.dumps(
    {"repository": {"id": 8, "full_name": "none/none"}, "ref": "refs/heads/dev", "after": "b" * 40}
)


def bench_worker(settings: Settings, env: dict[str, str], n: int, workdir: Path) -> None:
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    with (workdir / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [*hookstream_argv(), "worker", "triggers"], env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            matched, unmatched = asyncio.run(measure_worker(settings, n))
        finally:
            worker.terminate()
            worker.wait()
    print(f"| end to end, every delivery dispatches | {n:,} | {matched:,.0f} dispatches/s |")
    print(f"| end to end, no delivery matches | {n:,} | {unmatched:,.0f} deliveries/s |")


async def measure_worker(settings: Settings, n: int) -> tuple[float, float]:
    # One delivery first, to know the worker is up and assigned before timing.
    await produce(settings, [("push", MATCHING, b"1")])
    await wait_for(lambda: _reached(settings, 1))

    started = time.perf_counter()
    await produce(settings, [("push", MATCHING, str(i % 97).encode()) for i in range(n)])
    await wait_for(lambda: _reached(settings, n + 1))
    matched = n / (time.perf_counter() - started)

    started = time.perf_counter()
    await produce(settings, [("push", NOT_MATCHING, str(i % 97).encode()) for i in range(n)])
    # One matching delivery at the end of every partition: when all of their dispatches
    # are out, every delivery before them has been read.
    for p in range(settings.events_partitions):
        await produce(settings, [("push", MATCHING, None)], partition=p)
    await wait_for(lambda: _reached(settings, n + 1 + settings.events_partitions))
    return matched, n / (time.perf_counter() - started)


async def _reached(settings: Settings, n: int) -> bool:
    return await topic_size(settings, settings.dispatch_topic, settings.dispatch_partitions) >= n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--e2e", type=int, default=20_000)
    args = parser.parse_args()
    corpus.fetch(CACHE_DIR)
    examples = corpus.load(CACHE_DIR)
    print(f"## matcher, {args.events:,} corpus-derived deliveries")
    bench_matcher(workload(examples, args.events))

    with tempfile.TemporaryDirectory(prefix="hookstream-bench-") as tmp:
        workdir = Path(tmp)
        broker = local_broker(workdir / "broker", heap="512m")
        broker.up()
        try:
            suffix = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                data_dir=workdir / "data",
                events_topic=f"bench.events.{suffix}",
                dispatch_topic=f"bench.dispatch.{suffix}",
                run_status_topic=f"bench.run-status.{suffix}",
                group_prefix=f"bench-{suffix}",
            )
            triggers = workdir / "triggers.yml"
            triggers.write_text(
                "workflows:\n  build:\n    on:\n      - event: github:org0/repo0:push.branch\n"
                "        branches: [main]\n"
            )
            env = processor_env(settings, HOOKSTREAM_TRIGGERS_FILE=str(triggers))
            print(f"\n## worker through Kafka ({settings.events_partitions} partitions)")
            print("| run | deliveries | rate |")
            print("| --- | ---: | ---: |")
            bench_worker(settings, env, args.e2e, workdir)
        finally:
            broker.down()


if __name__ == "__main__":
    main()
