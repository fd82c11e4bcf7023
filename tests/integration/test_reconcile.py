"""``hookstream reconcile`` against the real broker and the local fake GitHub.

Some deliveries reached ``github.events`` through the ingress; GitHub's list (scripted in
the fake, validated against GitHub's OpenAPI description both ways) says which attempts
failed. The command runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from deploy.commands import hookstream_argv
from deploy.send import signed_delivery
from tests.fake_github.credentials import APP_ID, PRIVATE, PUBLIC
from tests.fake_github.server import FakeGitHub
from tests.helpers import CACHE_DIR, SECRET, RunningIngress, processor_env

pytestmark = pytest.mark.integration


@dataclass
class GitHub:
    fake: FakeGitHub
    url: str
    key_file: Path


@pytest.fixture
async def github(tmp_path: Path) -> AsyncIterator[GitHub]:
    fake = FakeGitHub(CACHE_DIR, APP_ID, PUBLIC)
    server = TestServer(fake.application(), host="127.0.0.1")
    await server.start_server()
    key_file = tmp_path / "app.pem"
    key_file.write_text(PRIVATE)
    yield GitHub(fake, str(server.make_url("")), key_file)
    await server.close()
    assert fake.violations == []


@dataclass
class Run:
    code: int
    out: str
    err: str

    def listed(self) -> list[str]:
        """The GUIDs the command listed (each missing delivery's line starts with one)."""
        return [line.split()[0] for line in self.out.splitlines() if _is_guid(line.split()[0:1])]


def _is_guid(words: list[str]) -> bool:
    try:
        return bool(words) and uuid.UUID(words[0]) is not None
    except ValueError:
        return False


async def reconcile(ingress: RunningIngress, github: GitHub | None, *args: str) -> Run:
    env = processor_env(ingress.settings)
    for name in ("HOOKSTREAM_GITHUB_APP_ID", "HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE"):
        env.pop(name, None)
    if github is not None:
        env.update(
            HOOKSTREAM_GITHUB_APP_ID=str(APP_ID),
            HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE=str(github.key_file),
            HOOKSTREAM_GITHUB_API_URL=github.url,
        )
    process = await asyncio.create_subprocess_exec(
        *hookstream_argv("reconcile", *args),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"reconcile hung:\n{out.decode()}\n{err.decode()}") from None
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def deliver(ingress: RunningIngress, guid: str, repository_id: int) -> None:
    """What reached hookstream: a signed delivery through the ingress onto the log."""
    payload = orjson.dumps({
        "action": "opened", "number": 1,
        "repository": {"id": repository_id, "full_name": f"acme/r{repository_id}"},
        "sender": {"id": 7, "login": "octocat", "type": "User"},
    })  # fmt: skip
    status, _ = await ingress.post(
        signed_delivery(payload, "pull_request", SECRET, delivery_id=guid)
    )
    assert status == 202


@dataclass
class Scenario:
    refused: str  # 502 twice: missing
    unreachable: str  # status 0: missing
    recovered: str  # status 0, then redelivered with a 202: not missing
    timed_out: str  # GitHub saw a timeout, but the ingress wrote it: not missing
    old: str  # failed, not in the log, but older than --since 1h: not listed
    latest: dict[str, int]  # GUID -> the id of its latest attempt


async def scenario(ingress: RunningIngress, fake: FakeGitHub) -> Scenario:
    now = datetime.now(UTC)

    def ago(minutes: float) -> datetime:
        return now - timedelta(minutes=minutes)

    guids = [str(uuid.uuid4()) for _ in range(5)]
    refused, unreachable, recovered, timed_out, old = guids
    # 120 deliveries GitHub made without trouble: with the rest, more than a page of 100.
    fine = [str(uuid.uuid4()) for _ in range(120)]
    for i, guid in enumerate(fine):
        fake.add_delivery(guid, 202, ago(1 + i / 4), event="pull_request", action="opened")
    latest = {
        refused: fake.add_delivery(refused, 502, ago(40), event="issues", action="opened")["id"],
        unreachable: fake.add_delivery(unreachable, 0, ago(45))["id"],
    }
    latest[refused] = fake.add_delivery(
        refused, 502, ago(38), event="issues", action="opened", redelivery=True
    )["id"]
    fake.add_delivery(recovered, 0, ago(50))
    fake.add_delivery(recovered, 202, ago(33), redelivery=True)
    fake.add_delivery(timed_out, 0, ago(55), status="timed out")
    fake.add_delivery(old, 0, ago(120))
    for i in range(100):  # a third page, all older than the window: never asked for
        fake.add_delivery(str(uuid.uuid4()), 0, ago(121 + i))
    # What reached hookstream: a few of the fine ones, and the one GitHub saw time out.
    # (``recovered`` is left out on purpose: GitHub's own 202 is what makes it not missing.)
    for i, guid in enumerate([*fine[:8], timed_out]):
        await deliver(ingress, guid, repository_id=100 + i)
    return Scenario(refused, unreachable, recovered, timed_out, old, latest)


async def test_a_dry_run_lists_exactly_the_missing_deliveries_and_sends_nothing(
    ingress: RunningIngress, github: GitHub
) -> None:
    s = await scenario(ingress, github.fake)
    github.fake.fail("deliveries", 502)  # GitHub has a bad moment: retried with backoff
    run = await reconcile(ingress, github, "--since", "1h")
    assert run.code == 0, run.err
    assert sorted(run.listed()) == sorted([s.refused, s.unreachable]), run.out
    assert f"2 missing from {ingress.settings.events_topic}" in run.out
    assert "dry run" in run.out
    refused_line = next(line for line in run.out.splitlines() if line.startswith(s.refused))
    assert "issues.opened" in refused_line
    assert "last 502 Invalid HTTP Response: 502 (2 attempts)" in refused_line
    assert github.fake.calls("redeliver") == []
    # Two pages in the window, the 502 retried once; the third page is never asked for.
    assert [c.status for c in github.fake.calls("deliveries")] == [502, 200, 200]
    assert "HTTP 502" in run.err


async def test_apply_redelivers_each_missing_delivery_once_waiting_out_rate_limits(
    ingress: RunningIngress, github: GitHub
) -> None:
    s = await scenario(ingress, github.fake)
    github.fake.fail("redeliver", 403, reset_in_s=1)  # primary limit: reset a second ahead
    github.fake.fail("redeliver", 429, retry_after="1")  # secondary limit
    started = time.monotonic()
    run = await reconcile(ingress, github, "--since", "1h", "--apply")
    assert run.code == 0, run.err + run.out
    assert time.monotonic() - started >= 2.0
    wanted = [s.latest[s.refused], s.latest[s.unreachable]]
    assert sorted(github.fake.redeliveries()) == sorted(wanted)  # one each, the latest attempt
    posts = github.fake.calls("redeliver")
    assert [c.status for c in posts] == [403, 429, 202, 202]
    assert posts[0].path == posts[1].path == posts[2].path  # the same delivery, retried
    assert posts[1].at - posts[0].at >= 0.9  # waited for the reset
    assert posts[2].at - posts[1].at >= 0.9  # waited retry-after
    assert "rate limited (HTTP 403, until x-ratelimit-reset)" in run.err
    assert "rate limited (HTTP 429, retry-after)" in run.err
    for guid in (s.refused, s.unreachable):
        assert f"redelivered {guid} (attempt {s.latest[guid]}): 202 Accepted" in run.out
    assert "redelivered 2 of 2; 0 failed" in run.out
    # GitHub has now delivered them: nothing is missing any more.
    again = await reconcile(ingress, github, "--since", "1h")
    assert again.code == 0, again.err
    assert again.listed() == []
    assert again.out.startswith("nothing missing: ")


async def test_a_refused_redelivery_exits_1_and_says_which(
    ingress: RunningIngress, github: GitHub
) -> None:
    now = datetime.now(UTC)
    lost, also_lost = str(uuid.uuid4()), str(uuid.uuid4())
    first = github.fake.add_delivery(lost, 0, now - timedelta(minutes=3))["id"]
    github.fake.add_delivery(also_lost, 504, now - timedelta(minutes=2))
    github.fake.fail("redeliver", 400)
    run = await reconcile(ingress, github, "--apply")
    assert run.code == 1, run.err
    assert f"FAILED {lost} (attempt {first}): HTTP 400" in run.out
    assert f"redelivered {also_lost} " in run.out
    assert "redelivered 1 of 2; 1 failed" in run.out


async def test_nothing_failed_means_nothing_to_do(ingress: RunningIngress, github: GitHub) -> None:
    github.fake.add_delivery(str(uuid.uuid4()), 202, datetime.now(UTC) - timedelta(hours=71))
    run = await reconcile(ingress, github)
    assert (run.code, run.listed()) == (0, [])
    assert run.out.startswith("nothing missing: 1 delivery since ")


async def test_bad_arguments_and_missing_credentials_exit_2(
    ingress: RunningIngress, github: GitHub
) -> None:
    too_far = await reconcile(ingress, github, "--since", "4d")
    assert too_far.code == 2
    assert "GitHub keeps an App's deliveries for 3 days" in too_far.err
    nonsense = await reconcile(ingress, github, "--since", "yesterday")
    assert (nonsense.code, "not a duration" in nonsense.err) == (2, True)
    anonymous = await reconcile(ingress, None)
    assert anonymous.code == 2
    assert "HOOKSTREAM_GITHUB_APP_ID" in anonymous.err
    assert "HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE" in anonymous.err
    assert github.fake.calls() == []
