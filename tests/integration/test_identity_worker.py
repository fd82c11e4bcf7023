"""Identity end to end: links through the ingress, the identity worker, late binding in
ClickHouse, and ChatOps roles in the triggers worker — all through the real broker.

The history is the insights scenario (alice, bob, carol and dave on GitHub, a bot
reviewing); people are linked after their events, and the views must follow.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from deploy.corpus import Example
from deploy.replay import caught_up, log_end
from deploy.send import signed_delivery
from processors.dead_letter import ERROR_HEADER, PROCESSOR_HEADER
from projections.query import QueryServiceUnavailable, query_service
from schemas.identity import Conflict, Resolved, parse_identity_event
from schemas.settings import Settings
from tests.helpers import (
    REPO_ROOT,
    SECRET,
    RunningIngress,
    WorkerProcess,
    eventually,
    free_port_pair,
    make_settings,
    processor_env,
    read_topic,
    start_ingress,
    stop_ingress,
)
from tests.integration.insights_scenario import ALICE, Scenario

pytestmark = pytest.mark.integration

ADMIN = "admin-token"


@dataclass
class Stack:
    settings: Settings
    ingress: RunningIngress
    port: int

    async def identities(self, method: str, path: str = "", body: Any = None) -> int:
        url = f"{self.ingress.url}/v1/identities{path}"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with self.ingress.session.request(method, url, json=body, headers=headers) as r:
            return r.status

    async def link(self, person: str, account: int, role: str | None = None) -> None:
        body = {"platform_user": person, "github_user_id": account} | (
            {"role": role} if role else {}
        )
        assert await self.identities("POST", body=body) == 202

    async def unlink(self, person: str, account: int) -> None:
        assert await self.identities("DELETE", f"/{person}/{account}") == 202

    async def rows(self, sql: str) -> list[list[Any]]:
        try:
            return (await query_service(self.port, sql)).rows
        except QueryServiceUnavailable:
            return []

    async def until(self, sql: str, expected: list[list[Any]], what: str) -> None:
        async def matches() -> bool:
            return await self.rows(sql) == expected

        try:
            await eventually(matches, what, 120)
        except AssertionError:
            raise AssertionError(f"{what}: {sql} gave {await self.rows(sql)}") from None


@pytest.fixture
async def stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Stack]:
    settings = make_settings(kafka_bootstrap, tmp_path, admin_tokens=ADMIN)
    server, ingress = await start_ingress(settings)
    port = free_port_pair()
    workers = [
        WorkerProcess("identity", processor_env(settings), tmp_path / "identity.log"),
        WorkerProcess(
            "insights",
            processor_env(settings, HOOKSTREAM_QUERY_PORT=str(port), HOOKSTREAM_SINK_FLUSH_S="0.2"),
            tmp_path / "insights.log",
        ),
    ]
    for worker in workers:
        await worker.start()
    try:
        await ingress.wait_ready()
        yield Stack(settings, ingress, port)
    finally:
        for worker in workers:
            await worker.stop()
        await stop_ingress(server, ingress)


ACTIVITY = (
    "SELECT person, prs_opened, prs_merged, reviews_given FROM person_activity ORDER BY person"
)
FLOW = "SELECT pr_number, person FROM pr_flow ORDER BY pr_number"


async def test_links_made_later_rebind_history_and_unlinks_release_it(
    stack: Stack, examples: tuple[Example, ...]
) -> None:
    deliveries = Scenario(examples).deliveries
    for event, body in deliveries:
        assert (await stack.ingress.post(signed_delivery(body, event, SECRET)))[0] == 202
    # Before any link: people are their GitHub logins; the bot's review counts for no one.
    await stack.until(
        ACTIVITY,
        [["alice", 1, 1, 1], ["bob", 0, 0, 2], ["carol", 1, 1, 0], ["dave", 1, 1, 0]],
        "activity by login",
    )

    # Linked today, the events of March follow; carol's second account (14) merges in.
    await stack.link("alice@corp", 11)
    await stack.link("carol@corp", 13)
    await stack.link("carol@corp", 14)
    await stack.until(
        ACTIVITY,
        [["alice@corp", 1, 1, 1], ["bob", 0, 0, 2], ["carol@corp", 2, 2, 0]],
        "activity by person",
    )
    await stack.until(FLOW, [[1, "alice@corp"], [2, "carol@corp"], [7, "carol@corp"]], "pr_flow")
    await stack.until(
        "SELECT pr_number, person FROM dora_lead_time ORDER BY pr_number",
        [[1, "alice@corp"], [2, "carol@corp"], [7, "carol@corp"]],
        "dora_lead_time",
    )

    # Unlinked: the account's events go back to its GitHub login.
    await stack.unlink("carol@corp", 14)
    await stack.until(FLOW, [[1, "alice@corp"], [2, "carol@corp"], [7, "dave"]], "after unlink")

    # alice renames her login: history stays with her person, and the new login shows.
    renamed = copy.deepcopy(next(e for e in examples if e.name == "issues.opened").payload)
    renamed["sender"] = ALICE | {"login": "alice-renamed"}
    assert (await stack.ingress.post(signed_delivery(orjson.dumps(renamed), "issues", SECRET)))[
        0
    ] == 202
    await stack.until(
        "SELECT github_login, platform_user FROM identity_current WHERE github_user_id = 11",
        [["alice-renamed", "alice@corp"]],
        "rename",
    )
    await stack.until(FLOW, [[1, "alice@corp"], [2, "carol@corp"], [7, "dave"]], "rename kept")
    await stack.unlink("alice@corp", 11)
    await stack.until(FLOW, [[1, "alice-renamed"], [2, "carol@corp"], [7, "dave"]], "renamed")

    # A bot is nobody, even when somebody links it.
    await stack.link("robots@corp", 99)
    await stack.until(
        "SELECT is_bot, platform_user FROM identity_current WHERE github_user_id = 99",
        [[1, None]],
        "the bot",
    )
    activity = await stack.rows("SELECT person FROM person_activity")
    assert not {"robots@corp", "dependabot[bot]"} & {row[0] for row in activity}

    # The README's queries per person and per team answer as pasted; alice joins a team.
    joined = copy.deepcopy(next(e for e in examples if e.name == "membership.added").payload)
    joined["member"] = ALICE
    assert (await stack.ingress.post(signed_delivery(orjson.dumps(joined), "membership", SECRET)))[
        0
    ] == 202
    team = f"team:{joined['organization']['login']}/{joined['team']['slug']}"
    await stack.until(
        "SELECT scope FROM identity_memberships WHERE github_user_id = 11", [[team]], "alice's team"
    )
    per_person, per_change, per_team = readme_queries()
    assert ["bob", 0, 0, 2] in [row[:4] for row in await stack.rows(per_person)]
    assert ["carol@corp", 1] in [row[:2] for row in await stack.rows(per_change)]
    assert [row[:2] for row in await stack.rows(per_team)] == [[team, 1]]


def readme_queries() -> list[str]:
    section = (REPO_ROOT / "README.md").read_text().split("Metrics per person and per team:")[1]
    queries = re.findall(
        r'^\.venv/bin/hookstream sql "(.+)"$', section.split("**Dispatch")[0], re.M
    )
    assert len(queries) == 3
    return queries


async def test_two_people_claiming_one_account_is_a_reported_conflict(
    stack: Stack, examples: tuple[Example, ...]
) -> None:
    await stack.link("alice@corp", 11)
    await stack.link("mallory@corp", 11)
    await stack.until(
        "SELECT platform_user FROM identity_current WHERE github_user_id = 11",
        [["mallory@corp"]],
        "the later link wins",
    )
    records = await read_topic(stack.settings, stack.settings.identity_topic, partitions=1)
    conflicts = [e for r in records if isinstance(e := parse_identity_event(r.value), Conflict)]
    assert [(c.github_user_id, c.claimants, c.winner) for c in conflicts] == [
        (11, ("alice@corp", "mallory@corp"), "mallory@corp")
    ]
    await stack.until(
        "SELECT claimants FROM identities WHERE kind = 'conflict'",
        [[["alice@corp", "mallory@corp"]]],
        "the conflict in ClickHouse",
    )


# --- ChatOps: roles of linked people ------------------------------------------------------------
COMMANDS = """
workflows:
  deploy:
    commands:
      - command: deploy
        associations: [OWNER]
        roles: [deployer]
    check: false
"""


async def resolved_offset(settings: Settings, account: int, person: str | None) -> int:
    """The offset of the identity worker's answer naming ``person`` for ``account``."""

    async def find() -> int | None:
        for record in await read_topic(settings, settings.identity_topic, partitions=1):
            event = parse_identity_event(record.value)
            if (isinstance(event, Resolved) and event.github_user_id == account
                    and event.platform_user == person):  # fmt: skip
                return int(record.offset)
        return None

    return int(await eventually(find, f"the answer {account} -> {person}", 60))


async def directory_offset(metrics_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
        text = await response.text()
    match = re.search(r"^hookstream_identity_directory_offset (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


async def test_a_linked_role_admits_a_command_until_the_unlink(
    kafka_bootstrap: str, tmp_path: Path, examples: tuple[Example, ...]
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, admin_tokens=ADMIN)
    triggers_file = tmp_path / "triggers.yml"
    triggers_file.write_text(COMMANDS)
    server, ingress = await start_ingress(settings)
    metrics_port = free_port_pair()
    identity = WorkerProcess("identity", processor_env(settings), tmp_path / "identity.log")
    triggers = WorkerProcess(
        "triggers",
        processor_env(settings, HOOKSTREAM_TRIGGERS_FILE=str(triggers_file),
                      HOOKSTREAM_WORKER_METRICS_PORT=str(metrics_port)),
        tmp_path / "triggers.log",
    )  # fmt: skip
    stack = Stack(settings, ingress, 0)
    payload = copy.deepcopy(next(e for e in examples if e.name == "issue_comment.created").payload)
    payload["comment"].update(body="/deploy prod", author_association="NONE")
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/x"}
    author = payload["comment"]["user"]["id"]
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    async def directory_has(offset: int) -> bool:
        return await directory_offset(metrics_url) > offset

    async def dispatches() -> list[dict[str, Any]]:
        records = await read_topic(settings, settings.dispatch_topic,
                                   partitions=settings.dispatch_partitions)  # fmt: skip
        return [orjson.loads(r.value) for r in records]

    await identity.start()
    await triggers.start()
    try:
        await ingress.wait_ready()
        await stack.link("ops@corp", author, role="deployer")
        linked = await resolved_offset(settings, author, "ops@corp")
        await eventually(lambda: directory_has(linked), "the triggers worker to learn the link")
        assert (await ingress.post(signed_delivery(orjson.dumps(payload), "issue_comment",
                                                   SECRET)))[0] == 202  # fmt: skip
        [dispatch] = await eventually(dispatches, "the command dispatched", 60)
        assert dispatch["workflow"] == "deploy"
        assert dispatch["actor"]["platform_user"] == "ops@corp"

        await stack.unlink("ops@corp", author)
        unlinked = await resolved_offset(settings, author, None)
        await eventually(lambda: directory_has(unlinked), "the triggers worker to learn the unlink")
        assert (await ingress.post(signed_delivery(orjson.dumps(payload), "issue_comment",
                                                   SECRET)))[0] == 202  # fmt: skip
        horizon = await log_end(settings, settings.app_id("triggers"))
        await eventually(lambda: caught_up(settings, horizon), "the worker to read the comment")
        assert len(await dispatches()) == 1  # refused: NONE, and no linked role any more
    finally:
        await triggers.stop()
        await identity.stop()
        await stop_ingress(server, ingress)


async def test_an_unreadable_identity_record_is_parked_and_the_stream_goes_on(
    stack: Stack,
) -> None:
    settings = stack.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.identity_topic, b'{"kind": "link"}', key=b"x")
    finally:
        await producer.stop()
    await stack.link("alice@corp", 11)
    await stack.until(
        "SELECT platform_user FROM identity_current WHERE github_user_id = 11",
        [["alice@corp"]],
        "the link after the bad record",
    )

    async def parked() -> list[Any]:
        return await read_topic(settings, settings.identity_dlq_topic, partitions=1)

    letters = await eventually(lambda: _at_least(parked, 2), "both readers to park it")
    # The identity worker and the insights worker each read the topic, and each parks it.
    assert {dict(r.headers)[PROCESSOR_HEADER] for r in letters} == {b"identity", b"insights"}
    assert {r.value for r in letters} == {b'{"kind": "link"}'}
    assert all(b"ValidationError" in dict(r.headers)[ERROR_HEADER] for r in letters)


async def _at_least(read: Any, n: int) -> list[Any]:
    found: list[Any] = await read()
    return found if len(found) >= n else []
