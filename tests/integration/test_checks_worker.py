"""The checks worker through the real broker, against the local fake GitHub.

A pull request delivery goes in through the ingress; the triggers worker dispatches;
the checks worker (``hookstream worker checks``, its own process) mirrors the run to the
fake GitHub as the runner reports through the ingress. Every request is validated
against GitHub's OpenAPI description by the fake.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from deploy.commands import hookstream_argv
from deploy.send import SignedDelivery, signed_delivery
from processors.checks.machine import rerun_id
from processors.dead_letter import ERROR_HEADER
from schemas.dispatch import dispatch_id
from schemas.settings import Settings
from tests.fake_github.credentials import APP_ID, PRIVATE, PUBLIC
from tests.fake_github.server import FakeGitHub
from tests.helpers import (
    CACHE_DIR,
    SECRET,
    RunningIngress,
    WorkerProcess,
    eventually,
    free_port_pair,
    processor_env,
    read_topic,
    running,
    sample_payload,
)

pytestmark = pytest.mark.integration

INSTALLATION = 42


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeGitHub, str]]:
    made = FakeGitHub(CACHE_DIR, APP_ID, PUBLIC)
    server = TestServer(made.application(), host="127.0.0.1")
    await server.start_server()
    yield made, str(server.make_url("")).rstrip("/")
    await server.close()
    assert made.violations == []


def checks_env(settings: Settings, api_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    key = tmp_path / "app.pem"
    key.write_text(PRIVATE)
    return processor_env(
        settings, HOOKSTREAM_GITHUB_APP_ID=str(APP_ID),
        HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE=str(key), HOOKSTREAM_GITHUB_API_URL=api_url,
        HOOKSTREAM_CHECKS_DETAILS_URL="https://ci.example/{dispatch_id}/{run_id}", **extra,
    )  # fmt: skip


def pull_request() -> SignedDelivery:
    payload = sample_payload("pull_request.opened")
    payload["installation"] = {"id": INSTALLATION}
    return signed_delivery(orjson.dumps(payload), "pull_request", SECRET)


def ours(name: str, external_id: str, head_sha: str) -> SignedDelivery:
    payload = sample_payload(name)
    payload["check_run"]["app"]["id"] = APP_ID
    payload["check_run"]["external_id"] = external_id
    payload["check_run"]["head_sha"] = head_sha
    payload["installation"] = {"id": INSTALLATION}
    return signed_delivery(orjson.dumps(payload), "check_run", SECRET)


async def report(ingress: RunningIngress, run_id: str, body: dict[str, Any]) -> None:
    async with ingress.session.post(
        f"{ingress.url}/v1/runs/{run_id}/status", json=body,
        headers={"Authorization": "Bearer runner-token"},
    ) as response:  # fmt: skip
        assert response.status == 202, await response.text()


async def dispatches(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in await read_topic(settings, settings.dispatch_topic, 3):
        found.setdefault(record.key.decode(), []).append(orjson.loads(record.value))
    return found


async def test_a_pull_request_run_shows_on_github_and_reruns_get_check_runs_of_their_own(
    ingress: RunningIngress, fake: tuple[FakeGitHub, str], tmp_path: Path
) -> None:
    github, api_url = fake
    settings = ingress.settings
    triggers = tmp_path / "triggers.yml"
    triggers.write_text("workflows:\n  ci:\n    on: ['github:*/*:pull_request.opened']\n")
    env = checks_env(settings, api_url, tmp_path)
    trigger_worker = WorkerProcess(
        "triggers", processor_env(settings, HOOKSTREAM_TRIGGERS_FILE=str(triggers)),
        tmp_path / "triggers.log",
    )  # fmt: skip
    checks = WorkerProcess("checks", env, tmp_path / "checks.log")
    await trigger_worker.start()
    await checks.start()
    try:
        delivery = pull_request()
        assert (await ingress.post(delivery))[0] == 202
        dispatched = dispatch_id("1", delivery.delivery_id, "ci")
        sha = orjson.loads(delivery.body)["pull_request"]["head"]["sha"]
        runs = await eventually(lambda: _runs(github, dispatched), "the check run", 120)
        [run] = runs
        assert (run["name"], run["head_sha"], run["status"]) == ("ci", sha, "queued")

        await report(ingress, "run-1", {"status": "in_progress", "dispatch_id": dispatched})
        annotations = [
            {"path": "src/app.py", "start_line": i + 1, "end_line": i + 1,
             "annotation_level": "failure", "message": f"test {i} failed"}
            for i in range(60)
        ]  # fmt: skip
        await report(ingress, "run-1", {
            "status": "completed", "conclusion": "failure", "dispatch_id": dispatched,
            "output": {"title": "60 failures", "summary": "see annotations",
                       "annotations": annotations},
        })  # fmt: skip
        await eventually(lambda: _completed(github, run["id"]), "the completed run", 60)
        assert github.check_runs[run["id"]]["conclusion"] == "failure"
        assert len(github.check_runs[run["id"]]["annotations"]) == 60
        assert github.check_runs[run["id"]]["details_url"] == (
            f"https://ci.example/{dispatched}/run-1"
        )
        # Exactly these calls, in this order: no lookup was needed, one token bought.
        assert [c.endpoint for c in github.calls()] == [
            "token", "create", "update", "update", "update"
        ]  # fmt: skip
        transitions = [orjson.loads(r.value) for r in await read_topic(
            settings, settings.checks_topic, 3)]  # fmt: skip
        assert [(t["from"], t["to"]) for t in transitions] == [
            (None, "queued"), ("queued", "in_progress"), ("in_progress", "completed")
        ]  # fmt: skip
        assert {t["check_run_id"] for t in transitions} == {run["id"]}
        assert transitions[-1]["cause"] == "run-1"
        assert all(t["sent"] for t in transitions)

        # "Re-run" on GitHub: a new dispatch for the same workflow, with its own check run.
        rerun = ours("check_run.rerequested", dispatched, sha)
        assert (await ingress.post(rerun))[0] == 202
        new_id = rerun_id(dispatched, rerun.delivery_id)
        again = await eventually(lambda: _runs(github, new_id), "the re-run's check run", 120)
        assert again[0]["id"] != run["id"]
        requests = await dispatches(settings)
        assert requests[new_id][0]["workflow"] == "ci"
        assert requests[new_id][0]["delivery"]["delivery_id"] == rerun.delivery_id
        # A redelivery of the same re-run dispatches nothing more.
        assert (await ingress.post(rerun))[0] == 202
        button = ours("check_run.requested_action", dispatched, sha)
        assert (await ingress.post(button))[0] == 202
        action_id = rerun_id(dispatched, button.delivery_id)
        await eventually(lambda: _runs(github, action_id), "the action's check run", 120)
        requests = await dispatches(settings)
        assert requests[action_id][0]["variables"]["ACTION"] == "lgtm|26764"
        assert len(requests[new_id]) == 1
        # "Re-run all checks": the latest dispatch of each workflow on the commit, again.
        suite = sample_payload("check_suite.rerequested")
        suite["check_suite"]["app"]["id"] = APP_ID
        suite["check_suite"]["head_sha"] = sha
        suite["repository"] = orjson.loads(delivery.body)["repository"]
        suite["installation"] = {"id": INSTALLATION}
        everything = signed_delivery(orjson.dumps(suite), "check_suite", SECRET)
        assert (await ingress.post(everything))[0] == 202
        suite_id = rerun_id(action_id, everything.delivery_id)
        await eventually(lambda: _runs(github, suite_id), "the suite re-run's check run", 120)
        assert len(await dispatches(settings)) == 4  # the run, two re-runs, the suite's
    finally:
        await checks.stop()
        await trigger_worker.stop()

    # A replay of the log rebuilds the machines and calls nobody.
    calls, emitted = len(github.calls()), await dispatches(settings)
    replay = await asyncio.create_subprocess_exec(
        *hookstream_argv("replay", "checks"), env=env,
        stdout=checks.log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert await asyncio.wait_for(replay.wait(), 240) == 0, checks.log.read_text()[-3000:]
    assert len(github.calls()) == calls
    assert await dispatches(settings) == emitted


async def test_a_crash_between_githubs_answer_and_the_state_write_makes_one_run(
    kafka_bootstrap: str, fake: tuple[FakeGitHub, str], tmp_path: Path
) -> None:
    from tests.helpers import make_settings

    github, api_url = fake
    settings = make_settings(kafka_bootstrap, tmp_path)
    # A short session: the killed worker's partitions move on quickly.
    env = checks_env(settings, api_url, tmp_path, HOOKSTREAM_KAFKA_SESSION_TIMEOUT_S="10")
    checks = WorkerProcess("checks", env, tmp_path / "checks.log")
    killed: list[int] = []

    def crash() -> None:  # GitHub made the run; the worker dies before it can store it
        assert checks.process is not None
        if not killed:
            killed.append(checks.process.pid)
            checks.lives[-1].ended_by = signal.SIGKILL
            os.kill(checks.process.pid, signal.SIGKILL)
            # A signal lands when the kernel gets to it: on a busy machine the worker
            # could still read an answer sent now. Answer once it is dead.
            deadline = time.monotonic() + 30
            while running(checks.process.pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    github.after_create = crash
    request = _dispatch_request("b" * 40)
    await checks.start()
    try:
        await _produce(settings, settings.dispatch_topic, request["dispatch_id"], request)
        await eventually(lambda: _true(killed), "the crash", 120)
        assert checks.process is not None
        await asyncio.wait_for(checks.process.wait(), 30)
        await checks.start()
        await eventually(lambda: _lookup_seen(github), "the lookup after the crash", 120)
        await asyncio.sleep(2)  # room for a second create, were there one
        assert len(github.runs_for(request["dispatch_id"])) == 1
        assert [c.endpoint for c in github.calls() if c.endpoint != "token"] == [
            "create", "lookup"
        ]  # fmt: skip
    finally:
        await checks.stop()


async def test_a_revoked_installation_parks_the_effect_and_the_stream_goes_on(
    kafka_bootstrap: str, fake: tuple[FakeGitHub, str], tmp_path: Path
) -> None:
    from tests.helpers import make_settings

    github, api_url = fake
    github.revoked.add(43)
    settings = make_settings(kafka_bootstrap, tmp_path)
    port = free_port_pair()
    checks = WorkerProcess(
        "checks", checks_env(settings, api_url, tmp_path, HOOKSTREAM_WORKER_METRICS_PORT=str(port)),
        tmp_path / "checks.log",
    )  # fmt: skip
    revoked, fine = _dispatch_request("c" * 40, 43), _dispatch_request("d" * 40, 42)
    await checks.start()
    try:
        await _produce(settings, settings.dispatch_topic, revoked["dispatch_id"], revoked)
        await _produce(settings, settings.dispatch_topic, fine["dispatch_id"], fine)
        # A report for a dispatch nobody emitted, and one GitHub could never take.
        unknown = {"status": "in_progress", "dispatch_id": "00000000-0000-0000-0000-000000000000",
                   "run_id": "ghost", "received_at": "2026-11-26T09:00:00Z"}  # fmt: skip
        await _produce(settings, settings.run_status_topic, "ghost", unknown)
        bad = {**unknown, "status": "completed", "conclusion": "stale", "run_id": "bad"}
        await _produce(settings, settings.run_status_topic, "bad", bad)
        await eventually(lambda: _runs(github, fine["dispatch_id"]), "the other check run", 120)

        async def parked() -> list[Any]:
            return await read_topic(settings, settings.checks_dlq_topic)

        letters = await eventually(lambda: _at_least(parked, 2), "two dead letters", 60)
        errors = sorted(dict(r.headers)[ERROR_HEADER].decode() for r in letters)
        assert any("401" in e for e in errors), errors
        assert any("stale" in e for e in errors), errors
        assert github.runs_for(revoked["dispatch_id"]) == []
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            metrics = await response.text()
        assert 'hookstream_checks_transitions_refused_total{kind="unknown_dispatch"} 1.0' in (
            metrics
        )
        assert "hookstream_checks_effects_parked_total 1.0" in metrics
    finally:
        await checks.stop()


def test_an_unreadable_private_key_stops_the_worker_naming_the_setting(tmp_path: Path) -> None:
    env = dict(os.environ, HOOKSTREAM_GITHUB_APP_ID="1",
               HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE=str(tmp_path / "nope.pem"))  # fmt: skip
    result = subprocess.run(hookstream_argv("worker", "checks"), env=env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE=" in result.stderr
    assert "cannot read it" in result.stderr


def _dispatch_request(sha: str, installation: int = INSTALLATION) -> dict[str, Any]:
    return {
        "dispatch_id": str(uuid.uuid4()), "workflow": "ci", "trigger": "t",
        "repository": "acme/api", "repository_id": 7, "sha": sha,
        "actor": {"github_id": 1}, "delivery": {"hook_id": "1", "delivery_id": "g", "event": "x"},
        "installation_id": installation, "check_name": "ci",
        "requested_at": "2026-11-26T09:00:00Z",
    }  # fmt: skip


async def _produce(settings: Settings, topic: str, key: str, value: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
    finally:
        await producer.stop()


async def _runs(github: FakeGitHub, external_id: str) -> list[dict[str, Any]]:
    return copy.deepcopy(github.runs_for(external_id))


async def _completed(github: FakeGitHub, run_id: int) -> bool:
    return bool(github.check_runs[run_id]["status"] == "completed")


async def _true(flag: list[int]) -> bool:
    return bool(flag)


async def _lookup_seen(github: FakeGitHub) -> bool:
    return bool(github.calls("lookup"))


async def _at_least(read: Any, n: int) -> list[Any] | None:
    found = await read()
    return found if len(found) >= n else None
