"""Helpers the tests share: settings, ports, polling, a running ingress, worker processes,
reading topics, and the recorded payload samples of the unit tier (``tests/samples/``).

Fixtures live in ``conftest.py``; everything here is a plain function or class.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy import corpus
from deploy.broker import LocalBroker
from deploy.commands import hookstream_argv
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


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed process stays one until its parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(") ", 1)[1][0] != "Z"


def local_broker(data_dir: Path, heap: str = "384m") -> LocalBroker:
    settings = Settings(
        data_dir=data_dir,
        cache_dir=CACHE_DIR,
        kafka_bootstrap=f"127.0.0.1:{free_port_pair()}",
        kafka_heap=heap,
    )
    return LocalBroker(settings)


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
        "checks_topic": f"hookstream.checks.{uuid.uuid4().hex[:10]}",
        "identity_topic": f"hookstream.identity.{uuid.uuid4().hex[:10]}",
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
        "HOOKSTREAM_CHECKS_TOPIC": settings.checks_topic,
        "HOOKSTREAM_IDENTITY_TOPIC": settings.identity_topic,
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


@asynccontextmanager
async def serve_posts(
    handlers: Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
) -> AsyncIterator[dict[str, str]]:
    """Each handler on its own local server, taking ``POST /dispatch``; yields their URLs."""
    servers, urls = [], {}
    try:
        for name, handler in handlers.items():
            app = web.Application()
            app.router.add_post("/dispatch", handler)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            servers.append(server)
            urls[name] = f"http://127.0.0.1:{server.port}/dispatch"
        yield urls
    finally:
        for server in servers:
            await server.close()


async def stop_ingress(server: TestServer, ingress: RunningIngress) -> None:
    await ingress.session.close()
    await server.close()


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


@dataclass
class Life:
    """One run of a worker process: when it started, and the signal that ended it."""

    started: float
    ended_by: int | None = None


@dataclass
class WorkerProcess:
    """``hookstream worker NAME`` in its own process, restarted at will."""

    processor: str
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    lives: list[Life] = field(default_factory=list)

    async def start(self) -> None:
        self.lives.append(Life(time.time()))
        self.process = await asyncio.create_subprocess_exec(
            *hookstream_argv(), "worker", self.processor,
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        process = self.process
        assert process is not None
        if process.returncode is not None:
            raise AssertionError(f"worker exited by itself with {process.returncode}")
        self.lives[-1].ended_by = sig
        process.send_signal(sig)
        code = await asyncio.wait_for(process.wait(), 90)
        assert code in (0, -sig), f"worker stopped with {code}; see {self.log}"


SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> corpus.Example:
    """A real GitHub payload kept in ``tests/samples/`` (named as in the corpus)."""
    payload = orjson.loads((SAMPLES / f"{name}.json").read_bytes())
    action = payload.get("action")
    return corpus.Example(name, re.split(r"[.#]", name)[0], action, payload)


def sample_names() -> list[str]:
    return sorted(path.stem for path in SAMPLES.glob("*.json"))


def sample_payload(name: str) -> dict[str, Any]:
    """A fresh copy of a sample's payload, free to change."""
    return sample(name).payload
