"""A benchmark's records to and from the broker, in bulk: many sends in flight, awaited in
windows; large fetches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


async def send_all(
    bootstrap: str, records: Iterable[Outgoing], window: int = 5000, **producer: Any
) -> None:
    """Send every record, ``window`` at most unacknowledged; ``producer``: its options."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer)
    await client.start()
    try:
        pending = []
        for r in records:
            pending.append(await client.send(r.topic, r.value, key=r.key,
                                             partition=r.partition, headers=r.headers))  # fmt: skip
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await client.stop()


def bulk_consumer(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer (not started) that fetches up to 8 MiB a partition, 64 MiB a request."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
    )  # fmt: skip
