"""Who is linked to a GitHub account, for processors that must know now (ChatOps roles).

:class:`IdentityDirectory` reads every ``resolved`` record of ``hookstream.identity``
into memory — from the beginning at start, then as they come — so a link made through
the API takes effect without a restart. It reads with no consumer group: every worker
replica needs the whole directory, not a share of it. At start it waits (up to
``wait_s``) until it has read to the end of the topic, so a command is not refused only
because the worker was still catching up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service
from prometheus_client import CollectorRegistry, Gauge

from processors.triggers.authorization import PlatformUser
from schemas.identity import Resolved, parse_identity_event

log = logging.getLogger("hookstream.identity.directory")


class IdentityDirectory(Service):
    def __init__(
        self, bootstrap: str, topic: str, registry: CollectorRegistry, wait_s: float = 30.0
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.wait_s = wait_s
        # How fresh the directory is: compare with the topic's end offset.
        self.position = Gauge(
            "hookstream_identity_directory_offset",
            "The next hookstream.identity offset the directory will read.",
            registry=registry,
        )
        self.size = Gauge(
            "hookstream_identity_directory_accounts",
            "Accounts the directory knows an answer for.",
            registry=registry,
        )
        self._entries: dict[int, tuple[int, PlatformUser | None]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tail: asyncio.Task[None] | None = None

    def linked(self, github_id: int) -> PlatformUser | None:
        entry = self._entries.get(github_id)
        return entry[1] if entry else None

    def learn(self, resolved: Resolved) -> None:
        """Keep the newest answer per account (records may be read twice after a crash)."""
        held = self._entries.get(resolved.github_user_id)
        if held is not None and held[0] > resolved.version:
            return
        person = (
            PlatformUser(resolved.platform_user, frozenset(resolved.roles))
            if resolved.platform_user
            else None
        )
        self._entries[resolved.github_user_id] = (resolved.version, person)

    async def _read(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        for records in batches.values():
            for record in records:
                try:
                    event = parse_identity_event(record.value or b"")
                except ValueError as exc:  # the identity worker dead-letters these
                    log.debug("skipping identity record %d: %s", record.offset, exc)
                    continue
                if isinstance(event, Resolved):
                    self.learn(event)
            self.position.set(records[-1].offset + 1)
        self.size.set(len(self._entries))

    async def on_start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        self._consumer = consumer
        partition = TopicPartition(self.topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while await consumer.position(partition) < end:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("identity directory: still catching up after %.0f s", self.wait_s)
                break
            await self._read(consumer, 500)
        log.info("identity directory: %d accounts known", len(self._entries))
        self._tail = asyncio.create_task(self._follow(consumer), name="identity-directory")

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._read(consumer, 1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup must not take the worker down
                log.warning("identity directory: read failed (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def on_stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
        if self._consumer is not None:
            await self._consumer.stop()
