"""Shared fixtures: the real Kafka broker, the example corpus, a running ingress.

The broker comes, in this order of preference, from a Kafka container when
``HOOKSTREAM_TEST_DOCKER=1`` (needs a Docker engine; none on the development machines),
from ``HOOKSTREAM_KAFKA_BOOTSTRAP`` when that points at a running broker, or from
:class:`deploy.broker.LocalBroker` — the same code as ``hookstream kafka up`` — started
on free ports in a temporary data dir.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy import corpus
from deploy.broker import LocalBroker
from deploy.send import SignedDelivery
from ingress.app import create_app
from schemas.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("HOOKSTREAM_CACHE_DIR", REPO_ROOT / ".cache")).resolve()
SECRET = b"It's a Secret to Everybody"


def free_port_pair() -> int:
    """A port p such that p and p+1 are free (Kafka's broker and controller listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair found")


def local_broker(data_dir: Path, heap: str = "384m") -> LocalBroker:
    settings = Settings(
        data_dir=data_dir,
        cache_dir=CACHE_DIR,
        kafka_bootstrap=f"127.0.0.1:{free_port_pair()}",
        kafka_heap=heap,
    )
    return LocalBroker(settings)


@pytest.fixture(scope="session")
def examples() -> tuple[corpus.Example, ...]:
    corpus.fetch(CACHE_DIR)
    return corpus.load(CACHE_DIR)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("HOOKSTREAM_TEST_DOCKER") == "1":
        from testcontainers.community.kafka import KafkaContainer

        # Confluent Platform 8.1 ships Apache Kafka 4.1, the version the local runtime pins.
        with KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    if external := os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP"):
        yield external
        return
    broker = local_broker(tmp_path_factory.mktemp("kafka-session"))
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 120.0) -> Any:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = asyncio.get_running_loop().time() + within
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)
    return value


def unique_topic() -> str:
    return f"github.events.test-{uuid.uuid4().hex[:10]}"


def make_settings(bootstrap: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "cache_dir": CACHE_DIR,
        "kafka_bootstrap": bootstrap,
        "events_topic": unique_topic(),
        "dispatch_topic": f"hookstream.dispatch.{uuid.uuid4().hex[:10]}",
        "run_status_topic": f"hookstream.run-status.{uuid.uuid4().hex[:10]}",
        "dispatch_partitions": 3,
        "group_prefix": f"test-{uuid.uuid4().hex[:10]}",
        "runner_tokens": "runner-token",
        "events_partitions": 3,
        "webhook_secrets": SECRET.decode(),
        "ingress_produce_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def processor_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a `hookstream` subprocess use ``settings``' Kafka side."""
    return {
        **os.environ,
        "HOOKSTREAM_CACHE_DIR": str(CACHE_DIR),
        "HOOKSTREAM_DATA_DIR": str(settings.data_dir),
        "HOOKSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HOOKSTREAM_EVENTS_TOPIC": settings.events_topic,
        "HOOKSTREAM_EVENTS_PARTITIONS": str(settings.events_partitions),
        "HOOKSTREAM_DISPATCH_TOPIC": settings.dispatch_topic,
        "HOOKSTREAM_RUN_STATUS_TOPIC": settings.run_status_topic,
        "HOOKSTREAM_DISPATCH_PARTITIONS": str(settings.dispatch_partitions),
        "HOOKSTREAM_GROUP_PREFIX": settings.group_prefix,
        "HOOKSTREAM_LOG_LEVEL": os.environ.get("HOOKSTREAM_TEST_WORKER_LOG_LEVEL", "WARNING"),
        # Several workers run at once in the tests: no fixed metrics port unless asked.
        "HOOKSTREAM_WORKER_METRICS_PORT": "0",
        **extra,
    }


@dataclass
class RunningIngress:
    settings: Settings
    url: str
    session: aiohttp.ClientSession
    app: web.Application

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhooks/github"

    async def post(self, delivery: SignedDelivery) -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            self.webhook_url, data=delivery.body, headers=delivery.headers
        ) as response:
            return response.status, await response.json()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(f"{self.url}{path}") as response:
            return response.status, await response.text()

    async def wait_ready(self, want: int = 200, within: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            status, _ = await self.get("/readyz")
            if status == want:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"/readyz stayed {status}, expected {want}")
            await asyncio.sleep(0.2)


async def start_ingress(settings: Settings) -> tuple[TestServer, RunningIngress]:
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    ingress = RunningIngress(settings, f"http://127.0.0.1:{server.port}", session, app)
    return server, ingress


async def stop_ingress(server: TestServer, ingress: RunningIngress) -> None:
    await ingress.session.close()
    await server.close()


@pytest.fixture
async def ingress(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[RunningIngress]:
    server, running = await start_ingress(make_settings(kafka_bootstrap, tmp_path))
    await running.wait_ready()
    yield running
    await stop_ingress(server, running)


async def read_topic(
    settings: Settings, topic: str | None = None, partitions: int | None = None
) -> list[Any]:
    """Every record of a topic (the event log by default) from its beginning to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        topic = topic or settings.events_topic
        count = partitions or (settings.events_partitions if topic == settings.events_topic else 1)
        partitions_ = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions_)
        await consumer.seek_to_beginning(*partitions_)
        end = await consumer.end_offsets(partitions_)
        records: list[Any] = []
        while [tp for tp in partitions_ if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(*partitions_, timeout_ms=1000)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()
