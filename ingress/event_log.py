"""The ingress's write side of ``github.events``: an idempotent, ``acks=all`` producer.

The ingress must keep answering (503, and ``/readyz``) while Kafka is away, so the
producer is connected by a background task that retries until the broker answers,
and every append has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingress.delivery import EventRecord
from schemas.errors import HookstreamError
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs

log = logging.getLogger(__name__)


class EventLogUnavailable(HookstreamError):
    """The record was not acknowledged by Kafka in time; the caller must not claim success."""


class EventLog:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.events_topic
        self._timeout = settings.ingress_produce_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._ready_checked_at = 0.0
        self._ready = False

    def _new_producer(self) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            client_id="hookstream-ingress",
            acks="all",
            enable_idempotence=True,
            linger_ms=s.kafka_linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=s.max_record_bytes,
            request_timeout_ms=max(1000, int(s.ingress_produce_timeout_s * 1000)),
            retry_backoff_ms=100,
        )

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever(), name="event-log-connect")

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
                    # Best effort: an external cluster may forbid topic creation.
                    await ensure_topics(self._settings.kafka_bootstrap, topic_specs(self._settings))
                self._producer = producer
                log.info("connected to Kafka at %s", self._settings.kafka_bootstrap)
                return
            except (KafkaError, OSError) as exc:
                await producer.stop()
                log.warning(
                    "Kafka not reachable at %s (%s); retrying", self._settings.kafka_bootstrap, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def append(self, record: EventRecord) -> None:
        """Return only once the broker acknowledged ``record`` with acks=all."""
        await self.publish(self._topic, record.key, record.value, record.headers)

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Write one record to ``topic``; returns once acknowledged, or raises."""
        producer = self._producer
        if producer is None:
            raise EventLogUnavailable("event log unavailable: not connected to Kafka yet")
        try:
            # asyncio.timeout, unlike wait_for, does not wrap the send in a new Task.
            async with asyncio.timeout(self._timeout):
                await producer.send_and_wait(topic, value=value, key=key, headers=headers)
        except TimeoutError:
            raise EventLogUnavailable(
                f"event log unavailable: Kafka did not acknowledge within {self._timeout:g} s"
            ) from None
        except KafkaError as exc:
            raise EventLogUnavailable(f"event log unavailable: {type(exc).__name__}") from None

    async def ready(self) -> bool:
        """Whether Kafka answers a metadata request now (cached for one second)."""
        now = time.monotonic()
        if now - self._ready_checked_at < 1.0:
            return self._ready
        producer = self._producer
        ok = False
        if producer is not None:
            with contextlib.suppress(asyncio.TimeoutError, KafkaError, OSError):
                ok = bool(await asyncio.wait_for(producer.client.force_metadata_update(), 2.0))
        self._ready, self._ready_checked_at = ok, time.monotonic()
        return ok
