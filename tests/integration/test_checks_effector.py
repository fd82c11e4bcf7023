"""The GitHub effector against the local fake GitHub: the right calls, in order, once.

Every request the effector makes is validated against GitHub's OpenAPI description by
the fake; ``violations`` must stay empty. Waits are recorded, not slept.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gidgethub.aiohttp import GitHubAPI
from prometheus_client import CollectorRegistry

from processors.checks.calls import CUT_NOTE, MAX_OUTPUT_BYTES
from processors.checks.github import (
    AppCredentials,
    CheckRunEffector,
    ChecksMetrics,
    GitHubEffectFailed,
    InstallationTokens,
    rate_limit_wait,
)
from schemas.dispatch import Actor, DeliveryRef, DispatchRequest
from schemas.run_status import RunStatusRecord
from tests.fake_github.credentials import APP_ID, PRIVATE, PUBLIC
from tests.fake_github.server import FakeGitHub
from tests.helpers import CACHE_DIR

pytestmark = pytest.mark.integration

INSTALLATION = 42


@dataclass
class Rig:
    fake: FakeGitHub
    effector: CheckRunEffector
    waits: list[float]
    metrics: ChecksMetrics
    registry: CollectorRegistry


async def rig_for(fake: FakeGitHub, timeout_s: float = 5.0) -> AsyncIterator[Rig]:
    server = TestServer(fake.application(), host="127.0.0.1")
    await server.start_server()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    registry = CollectorRegistry()
    metrics = ChecksMetrics(registry)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        gh = GitHubAPI(session, "hookstream-tests", base_url=str(server.make_url("")))
        tokens = InstallationTokens(AppCredentials(str(APP_ID), PRIVATE))
        effector = CheckRunEffector(gh, tokens, metrics, sleep=sleep, jitter=lambda: 1.0)
        yield Rig(fake, effector, waits, metrics, registry)
    await server.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for made in rig_for(FakeGitHub(CACHE_DIR, APP_ID, PUBLIC)):
        yield made
        assert made.fake.violations == []


def request(dispatch_id: str = "6a1f2f0e-7d7b-5c55-8f33-6f0c1c1c0a01") -> DispatchRequest:
    return DispatchRequest(
        dispatch_id=dispatch_id, workflow="deploy", trigger="github:acme/*:push",
        repository="acme/api", repository_id=1, sha="a" * 40,
        actor=Actor(github_id=7, github_login="octocat"),
        delivery=DeliveryRef(hook_id="1", delivery_id="d-0", event="push"),
        installation_id=INSTALLATION, check_name="deploy",
    )  # fmt: skip


NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def report(status: str, conclusion: str | None = None, **output: object) -> RunStatusRecord:
    return RunStatusRecord.model_validate({
        "status": status, "conclusion": conclusion, "run_id": "run-1",
        "received_at": NOW + timedelta(minutes=1),
        **({"output": output} if output else {}),
    })  # fmt: skip


async def test_a_whole_run_is_a_create_and_two_patches(rig: Rig) -> None:
    first = request()
    run_id = await rig.effector.create(first, "https://ci.example/1", may_exist=False)
    await rig.effector.update(first, run_id, report("in_progress"), None, just_created=True)
    await rig.effector.update(first, run_id, report("completed", "success"), None,
                              just_created=False)  # fmt: skip
    assert [c.endpoint for c in rig.fake.calls()] == ["token", "create", "update", "update"]
    [run] = rig.fake.runs_for(first.dispatch_id)
    assert (run["status"], run["conclusion"], run["name"], run["head_sha"]) == (
        "completed", "success", "deploy", "a" * 40
    )  # fmt: skip
    assert run["details_url"] == "https://ci.example/1"
    create = rig.fake.calls("create")[0].body
    assert create == {
        "name": "deploy", "head_sha": "a" * 40, "status": "queued",
        "external_id": first.dispatch_id, "details_url": "https://ci.example/1",
    }  # fmt: skip
    # The token is cached: a second run costs exactly three requests.
    second = request("6a1f2f0e-7d7b-5c55-8f33-6f0c1c1c0a02")
    other = await rig.effector.create(second, None, may_exist=False)
    await rig.effector.update(second, other, report("in_progress"), None, just_created=True)
    await rig.effector.update(second, other, report("completed", "failure"), None,
                              just_created=False)  # fmt: skip
    assert len(rig.fake.calls()) == 4 + 3
    assert rig.waits == []
    gauge = rig.registry.get_sample_value(
        "hookstream_checks_rate_limit_remaining", {"installation": str(INSTALLATION)}
    )
    assert gauge == 5000 - 7


async def test_annotations_go_fifty_at_a_time_and_output_is_cut_to_github_bytes(rig: Rig) -> None:
    run_id = await rig.effector.create(request(), None, may_exist=False)
    annotations = [
        {"path": f"src/f{i}.py", "start_line": i + 1, "end_line": i + 1,
         "annotation_level": "warning", "message": f"finding {i}"}
        for i in range(120)
    ]  # fmt: skip
    summary = "é" * 40_000  # 40,000 characters, 80,000 UTF-8 bytes
    final = report("completed", "failure", title="120 findings", summary=summary,
                   annotations=annotations)  # fmt: skip
    await rig.effector.update(request(), run_id, final, None, just_created=True)
    patches = [c.body for c in rig.fake.calls("update")]
    assert [len(p["output"].get("annotations", [])) for p in patches] == [50, 50, 20]
    assert ["status" in p for p in patches] == [False, False, True]  # the status change last
    sent = patches[-1]["output"]["summary"]
    assert len(sent.encode()) <= MAX_OUTPUT_BYTES
    assert sent.endswith(CUT_NOTE)
    assert set(sent.removesuffix(CUT_NOTE)) == {"é"}  # cut between characters
    [run] = rig.fake.runs_for(request().dispatch_id)
    assert len(run["annotations"]) == 120
    assert run["conclusion"] == "failure"


async def test_a_secondary_rate_limit_is_waited_out(rig: Rig) -> None:
    rig.fake.fail("create", 403, retry_after="7")
    rig.fake.fail("update", 429, times=2, retry_after="3")
    run_id = await rig.effector.create(request(), None, may_exist=False)
    await rig.effector.update(request(), run_id, report("in_progress"), None, just_created=True)
    assert rig.waits == [7.0, 3.0, 3.0]
    assert len(rig.fake.runs_for(request().dispatch_id)) == 1


async def test_server_errors_are_retried_with_backoff(rig: Rig) -> None:
    rig.fake.fail("update", 502, times=2)
    run_id = await rig.effector.create(request(), None, may_exist=False)
    await rig.effector.update(request(), run_id, report("in_progress"), None, just_created=False)
    assert rig.waits == [0.5, 1.0]
    assert rig.fake.check_runs[run_id]["status"] == "in_progress"
    assert (
        rig.registry.get_sample_value(
            "hookstream_checks_github_requests_total", {"endpoint": "update", "status": "502"}
        )
        == 2
    )


async def test_a_404_right_after_a_create_is_retried_but_not_otherwise(rig: Rig) -> None:
    run_id = await rig.effector.create(request(), None, may_exist=False)
    rig.fake.fail("update", 404)
    await rig.effector.update(request(), run_id, report("in_progress"), None, just_created=True)
    assert rig.fake.check_runs[run_id]["status"] == "in_progress"
    rig.fake.fail("update", 404)
    with pytest.raises(GitHubEffectFailed, match="404"):
        await rig.effector.update(request(), run_id, report("completed", "success"), None,
                                  just_created=False)  # fmt: skip


async def test_a_create_that_may_have_reached_github_is_looked_up_first(rig: Rig) -> None:
    first = await rig.effector.create(request(), None, may_exist=False)
    again = await rig.effector.create(request(), None, may_exist=True)
    assert again == first
    assert [c.endpoint for c in rig.fake.calls()] == ["token", "create", "lookup"]
    # Nothing there yet: the lookup comes back empty and the run is created.
    other = request("6a1f2f0e-7d7b-5c55-8f33-6f0c1c1c0a03")
    made = await rig.effector.create(other, None, may_exist=True)
    assert [c.endpoint for c in rig.fake.calls()][3:] == ["lookup", "create"]
    assert rig.fake.check_runs[made]["external_id"] == other.dispatch_id


async def test_a_create_committed_but_answered_too_late_is_not_repeated() -> None:
    fake = FakeGitHub(CACHE_DIR, APP_ID, PUBLIC)
    fake.fail("create", 0, hold_s=2.0)  # GitHub made it; the answer comes after the timeout
    async for rig in rig_for(fake, timeout_s=0.5):
        run_id = await rig.effector.create(request(), None, may_exist=False)
        assert [r["id"] for r in fake.runs_for(request().dispatch_id)] == [run_id]
        assert [c.endpoint for c in fake.calls()] == ["token", "create", "lookup"]
        assert fake.violations == []


async def test_a_revoked_installation_fails_with_401(rig: Rig) -> None:
    rig.fake.revoked.add(INSTALLATION)
    with pytest.raises(GitHubEffectFailed, match="401") as failed:
        await rig.effector.create(request(), None, may_exist=False)
    assert failed.value.status == 401
    assert rig.fake.check_runs == {}


async def test_installation_tokens_are_minted_again_near_their_expiry() -> None:
    # Tokens that live 4 minutes are inside the 5-minute margin: each call mints one.
    fake = FakeGitHub(CACHE_DIR, APP_ID, PUBLIC, token_lifetime_s=240)
    async for rig in rig_for(fake):
        run_id = await rig.effector.create(request(), None, may_exist=False)
        await rig.effector.update(request(), run_id, report("in_progress"), None,
                                  just_created=True)  # fmt: skip
        assert [c.endpoint for c in fake.calls()] == ["token", "create", "token", "update"]


async def test_the_fake_refuses_what_github_would(rig: Rig) -> None:
    # The fake is only worth its checks if it refuses malformed calls: prove it does.
    session = rig.effector.gh
    token = await rig.effector.tokens.get(session, INSTALLATION)
    url = "/repos/acme/api/check-runs"
    bad = [
        {"name": "x", "head_sha": "a", "status": "waiting"},  # an Actions-only status
        {"name": "x", "head_sha": "a", "status": "completed"},  # no conclusion
        {"head_sha": "a"},  # no name
    ]
    for body in bad:
        with pytest.raises(Exception, match="Validation Failed"):
            await session.post(url, data=body, oauth_token=token)
    assert len(rig.fake.violations) == 3
    rig.fake.violations.clear()


def test_rate_limit_waits_read_retry_after_then_the_reset() -> None:
    now = time.time()
    assert rate_limit_wait({"retry-after": "30"}, now) == 30.0
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 90)}
    assert 89 <= (rate_limit_wait(reset, now) or 0) <= 90
    assert rate_limit_wait({"x-ratelimit-remaining": "12"}, now) is None  # a plain 403
    assert rate_limit_wait({"retry-after": "100000"}, now) == 900.0  # capped


def test_credentials_name_the_setting_that_is_wrong(tmp_path: Path) -> None:
    from processors.checks.github import CredentialsError
    from schemas.settings import Settings

    def settings(**values: object) -> Settings:
        return Settings(**values)  # type: ignore[arg-type]

    assert AppCredentials.from_settings(settings()) is None
    key = tmp_path / "app.pem"
    key.write_text(PRIVATE)
    assert AppCredentials.from_settings(
        settings(github_app_id="1", github_private_key_file=key)
    ) == AppCredentials("1", PRIVATE)
    with pytest.raises(CredentialsError, match=r"HOOKSTREAM_GITHUB_PRIVATE_KEY_FILE=.*cannot read"):
        AppCredentials.from_settings(
            settings(github_app_id="1", github_private_key_file=tmp_path / "missing.pem")
        )
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(CredentialsError, match="not a PEM private key"):
        AppCredentials.from_settings(
            settings(github_app_id="1", github_private_key_file=tmp_path / "junk.pem")
        )
    with pytest.raises(CredentialsError, match="HOOKSTREAM_GITHUB_APP_ID is not"):
        AppCredentials.from_settings(settings(github_private_key_file=key))
