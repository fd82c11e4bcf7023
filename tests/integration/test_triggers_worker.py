"""The triggers worker end to end: ingress, real broker, Faust worker, HTTP targets.

Deliveries go in through the ingress; the worker runs as ``hookstream worker triggers``
in its own process, exactly as in production; HTTP targets are local aiohttp servers.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from deploy.corpus import Example
from deploy.replay import caught_up, log_end
from deploy.send import SignedDelivery, signed_delivery
from processors.dead_letter import ERROR_HEADER
from schemas.dispatch import dispatch_id
from schemas.envelope import RecordHeader
from schemas.settings import Settings
from tests.helpers import (
    SECRET,
    RunningIngress,
    eventually,
    processor_env,
    read_topic,
    serve_posts,
)

pytestmark = pytest.mark.integration

TARGET_SECRETS = {"FLAKY_SECRET": "flaky-s3cret", "BROKEN_SECRET": "broken-s3cret",
                  "STEADY_SECRET": "steady-s3cret"}  # fmt: skip


@dataclass
class Target:
    """A local HTTP target: fails the first ``failures`` attempts of each dispatch."""

    secret: bytes
    failures: int = 0
    always_fail: bool = False
    delay_s: float = 0.0
    attempts: Counter[str] = field(default_factory=Counter)
    received: dict[str, float] = field(default_factory=dict)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if request.headers.get("X-Hookstream-Signature-256") != expected:
            self.bad_signatures += 1
        key = request.headers["Idempotency-Key"]
        assert orjson.loads(body)["dispatch_id"] == key
        self.attempts[key] += 1
        await asyncio.sleep(self.delay_s)
        if self.always_fail or self.attempts[key] <= self.failures:
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.received.setdefault(key, time.time())
        return web.Response(status=204)


@pytest.fixture
async def targets() -> AsyncIterator[dict[str, tuple[Target, str]]]:
    made = {
        "flaky": Target(b"flaky-s3cret", failures=2),
        "broken": Target(b"broken-s3cret", always_fail=True, delay_s=0.3),
        "steady": Target(b"steady-s3cret"),
    }
    async with serve_posts({name: t.handle for name, t in made.items()}) as urls:
        yield {name: (made[name], url) for name, url in urls.items()}


def trigger_file(path: Path, urls: dict[str, tuple[Target, str]]) -> Path:
    path.write_text(f"""
targets:
  flaky: {{url: "{urls["flaky"][1]}", secret_env: FLAKY_SECRET, backoff_s: 0.05}}
  broken: {{url: "{urls["broken"][1]}", secret_env: BROKEN_SECRET, max_attempts: 3,
           backoff_s: 0.2}}
  steady: {{url: "{urls["steady"][1]}", secret_env: STEADY_SECRET}}
workflows:
  pr-checks:
    on: ["github:*/*:pull_request.opened"]
    targets: [flaky]
  build-main:
    on:
      - event: github:*/*:push.branch
        branches: [master]
    targets: [broken, steady]
  deploy:
    commands:
      - command: deploy
    targets: [steady]
""")
    return path


def worker_env(settings: Settings, triggers: Path) -> dict[str, str]:
    return processor_env(settings, **TARGET_SECRETS, HOOKSTREAM_TRIGGERS_FILE=str(triggers))


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *hookstream_argv(), "worker", "triggers",
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


async def wait_caught_up(settings: Settings) -> None:
    horizon = await log_end(settings, settings.app_id("triggers"))
    await eventually(lambda: caught_up(settings, horizon), "the worker to read the whole log")


def deliveries(examples: tuple[Example, ...]) -> list[SignedDelivery]:
    by_name = {e.name: e for e in examples}

    def comment(body: str, association: str) -> bytes:
        payload = copy.deepcopy(by_name["issue_comment.created"].payload)
        payload["comment"].update(body=body, author_association=association)
        payload["issue"]["pull_request"] = {"url": "https://api.github.com/x"}
        return orjson.dumps(payload)

    return [
        signed_delivery(by_name["pull_request.opened"].body, "pull_request", SECRET),
        signed_delivery(by_name["pull_request.opened#2"].body, "pull_request", SECRET),
        signed_delivery(by_name["push#5"].body, "push", SECRET),
        signed_delivery(by_name["push#6"].body, "push", SECRET),
        signed_delivery(by_name["issues.opened"].body, "issues", SECRET),
        signed_delivery(comment("/deploy staging", "OWNER"), "issue_comment", SECRET),
        signed_delivery(comment("/deploy prod", "NONE"), "issue_comment", SECRET),
    ]


async def poison(settings: Settings) -> None:
    """A record the ingress would refuse, written straight to the log: not JSON."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.events_topic,
            b"\xff not json",
            key=b"1",
            headers=[(RecordHeader.EVENT, b"push"), (RecordHeader.DELIVERY, b"poison-1")],
        )
    finally:
        await producer.stop()


async def test_deliveries_dispatch_exactly_once_through_redelivery_and_replay(
    ingress: RunningIngress,
    examples: tuple[Example, ...],
    targets: dict[str, tuple[Target, str]],
    tmp_path: Path,
) -> None:
    settings = ingress.settings
    env = worker_env(settings, trigger_file(tmp_path / "triggers.yml", targets))
    log = tmp_path / "worker.log"
    sent = deliveries(examples)
    expected = {
        dispatch_id("1", sent[0].delivery_id, "pr-checks"): "pr-checks",
        dispatch_id("1", sent[1].delivery_id, "pr-checks"): "pr-checks",
        dispatch_id("1", sent[2].delivery_id, "build-main"): "build-main",
        dispatch_id("1", sent[3].delivery_id, "build-main"): "build-main",
        dispatch_id("1", sent[5].delivery_id, "deploy"): "deploy",
    }

    async def dispatched() -> list[Any]:
        return await read_topic(settings, settings.dispatch_topic, settings.dispatch_partitions)

    await poison(settings)
    for delivery in sent:
        assert (await ingress.post(delivery))[0] == 202
    worker = await start_worker(env, log)
    try:
        await eventually(lambda: _count_at_least(dispatched, len(expected)), "the dispatches")
        await wait_caught_up(settings)
        records = await dispatched()
        assert {r.key.decode(): orjson.loads(r.value)["workflow"] for r in records} == expected
        assert len(records) == len(expected)
        command = next(orjson.loads(r.value) for r in records if r.key.decode() in expected
                       and expected[r.key.decode()] == "deploy")  # fmt: skip
        assert command["variables"]["ARGS"] == "staging"

        # The poison record is parked with its error; everything after it was projected.
        [dead] = await read_topic(settings, settings.dlq_topic)
        assert dead.value == b"\xff not json"
        assert b"PayloadError" in dict(dead.headers)[ERROR_HEADER]

        # HTTP: flaky gets each dispatch exactly once after two failures; broken ends in
        # the DLQ; steady gets its dispatches while broken is still being retried.
        flaky, steady, broken = (targets[n][0] for n in ("flaky", "steady", "broken"))
        await eventually(lambda: _len_at_least(flaky.received, 2), "flaky's dispatches")
        await eventually(lambda: _len_at_least(steady.received, 3), "steady's dispatches")

        async def dead_letters() -> list[Any]:
            return await read_topic(settings, settings.dispatch_dlq_topic)

        await eventually(lambda: _count_at_least(dead_letters, 2), "broken's dead letters")
        assert set(flaky.attempts.values()) == {3}
        assert set(flaky.received) == {k for k, w in expected.items() if w == "pr-checks"}
        for target in (flaky, steady, broken):
            assert target.bad_signatures == 0
        letters = await dead_letters()
        assert {dict(r.headers)["x-hookstream-target"] for r in letters} == {b"broken"}
        assert set(broken.attempts.values()) == {3}
        for letter in letters:
            key = letter.key.decode()
            assert expected[key] == "build-main"
            assert steady.received[key] * 1000 < letter.timestamp  # steady was not held up

        # A replay while the worker runs is refused: two consumers of one group would race.
        refused = await asyncio.create_subprocess_exec(
            *hookstream_argv(), "replay", "triggers",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 1
        assert b"stop its workers before replaying" in err

        # Redelivery of everything: no new dispatch.
        for delivery in sent:
            assert (await ingress.post(delivery))[0] == 202
        await wait_caught_up(settings)
        assert len(await dispatched()) == len(expected)
    finally:
        await stop(worker)

    # Replay: the whole log again, effects off: no new dispatch, no HTTP call.
    calls_before = sum(sum(t.attempts.values()) for t, _ in targets.values())
    replay = await asyncio.create_subprocess_exec(
        *hookstream_argv(), "replay", "triggers",
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert await asyncio.wait_for(replay.wait(), 240) == 0, log.read_text()[-3000:]
    assert len(await dispatched()) == len(expected)
    assert sum(sum(t.attempts.values()) for t, _ in targets.values()) == calls_before


async def _count_at_least(read: Any, n: int) -> bool:
    return len(await read()) >= n


async def _len_at_least(collection: dict[str, float], n: int) -> bool:
    return len(collection) >= n


def test_worker_refuses_an_invalid_trigger_file(tmp_path: Path) -> None:
    bad = tmp_path / "triggers.yml"
    bad.write_text("workflows:\n  w:\n    on: ['nonsense']\n")
    result = subprocess.run(
        [*hookstream_argv(), "worker", "triggers"],
        env=dict(os.environ, HOOKSTREAM_TRIGGERS_FILE=str(bad)),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{bad}:3: workflows.w.on.0.event: 'nonsense' is not a trigger" in result.stderr


def test_worker_refuses_a_target_without_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "triggers.yml"
    path.write_text(
        "targets:\n  t: {url: 'http://127.0.0.1:9/x', secret_env: UNSET_SECRET_X}\n"
        "workflows:\n  w:\n    on: ['github:*/*:push']\n    targets: [t]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "UNSET_SECRET_X"}
    result = subprocess.run(
        [*hookstream_argv(), "worker", "triggers"],
        env=dict(env, HOOKSTREAM_TRIGGERS_FILE=str(path)),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "UNSET_SECRET_X is not set" in result.stderr
