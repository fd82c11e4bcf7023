"""``POST /v1/identities`` and ``DELETE /v1/identities/…`` against the real broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.identity import Link, Source, Unlink, parse_identity_event
from tests.helpers import RunningIngress, make_settings, read_topic, start_ingress, stop_ingress

pytestmark = pytest.mark.integration

# Two admin tokens: the old one of a rotation still works while the new one rolls out.
NEW = {"Authorization": "Bearer admin-new", "Content-Type": "application/json"}
OLD = NEW | {"Authorization": "Bearer admin-old"}


@pytest.fixture
async def admin_ingress(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[RunningIngress]:
    settings = make_settings(kafka_bootstrap, tmp_path, admin_tokens="admin-old, admin-new")
    server, running = await start_ingress(settings)
    await running.wait_ready()
    yield running
    await stop_ingress(server, running)


async def call(
    ingress: RunningIngress, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any], Any]:
    data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    async with ingress.session.request(
        method, f"{ingress.url}{path}", data=data, headers=headers
    ) as response:
        return response.status, await response.json(), response.headers


async def identity_records(ingress: RunningIngress) -> list[Any]:
    settings = ingress.settings
    return await read_topic(settings, settings.identity_topic, partitions=1)


async def test_a_link_and_an_unlink_are_recorded_on_the_identity_topic(
    admin_ingress: RunningIngress,
) -> None:
    before = datetime.now().astimezone()
    link = {"platform_user": "alice", "github_user_id": 583231, "role": "deployer"}
    status, answer, _ = await call(admin_ingress, "POST", "/v1/identities", NEW, link)
    assert (status, answer["kind"]) == (202, "link")
    linked_id = answer["event_id"]
    assert uuid.UUID(linked_id).version == 4

    status, answer, _ = await call(admin_ingress, "DELETE", "/v1/identities/alice/583231", OLD)
    assert (status, answer["kind"]) == (202, "unlink")
    unlinked_id = answer["event_id"]

    [first, second] = await identity_records(admin_ingress)
    linked, unlinked = parse_identity_event(first.value), parse_identity_event(second.value)
    assert isinstance(linked, Link)
    assert linked.at >= before
    assert linked == Link(
        event_id=linked_id, at=linked.at, platform_user="alice", github_user_id=583231,
        role="deployer", source=Source.API,
    )  # fmt: skip
    assert unlinked == Unlink(
        event_id=unlinked_id, at=unlinked.at, platform_user="alice", github_user_id=583231,
        source=Source.API,
    )  # fmt: skip
    assert (first.key, second.key) == (b"583231", b"583231")
    assert (first.headers, second.headers) == ((), ())


async def test_a_link_by_login_is_keyed_by_the_person(admin_ingress: RunningIngress) -> None:
    link = {"platform_user": "bob", "github_login": "octo-bob", "email": "Bob@Example.com"}
    status, answer, _ = await call(admin_ingress, "POST", "/v1/identities", NEW, link)
    assert status == 202
    [record] = await identity_records(admin_ingress)
    assert record.key == b"bob"
    recorded = orjson.loads(record.value)
    assert recorded == {
        "kind": "link", "event_id": answer["event_id"], "at": recorded["at"],
        "platform_user": "bob", "github_user_id": None, "github_login": "octo-bob",
        "email": "bob@example.com", "role": None, "source": "api",
    }  # fmt: skip


async def test_refused_requests_write_nothing(admin_ingress: RunningIngress) -> None:
    good = {"platform_user": "alice", "github_user_id": 583231}
    no_token = {"Content-Type": "application/json"}
    wrong = NEW | {"Authorization": "Bearer runner-token"}
    for method, path in (("POST", "/v1/identities"), ("DELETE", "/v1/identities/alice/583231")):
        status, answer, headers = await call(admin_ingress, method, path, no_token, good)
        assert (status, answer["error"], headers["WWW-Authenticate"]) == (
            401, "unauthorized", "Bearer"
        )  # fmt: skip
        status, answer, _ = await call(admin_ingress, method, path, wrong, good)
        assert (status, answer["message"]) == (401, "unknown admin token")

    refusals = [
        ({"github_user_id": 1}, "platform_user: required"),
        ({"platform_user": "alice"}, "body: a link needs github_user_id, github_login or email"),
        ({"platform_user": "alice", "github_user_id": "583231"}, "github_user_id: must be a"),
        ({"platform_user": "alice", "github_user_id": 0}, "github_user_id: must be a positive"),
        ({"platform_user": "alice", "github_login": "-bad-"}, "github_login: must be a GitHub"),
        ({"platform_user": "alice", "github_user_id": 1, "role": "a b"}, "role: must be 1-64"),
        ({"platform_user": "alice", "github_user_id": 1, "admin": True}, "admin: unknown field"),
        (b'{"platform_user": ', "body: not JSON"),
        (b"[]", "body: must be a JSON object"),
    ]
    for body, message in refusals:
        status, answer, _ = await call(admin_ingress, "POST", "/v1/identities", NEW, body)
        assert (status, answer["error"]) == (400, "bad_link"), body
        assert answer["message"].startswith(message), (body, answer)

    text = NEW | {"Content-Type": "text/plain"}
    assert (await call(admin_ingress, "POST", "/v1/identities", text, good))[0] == 415
    huge = good | {"role": "r" * (64 * 1024)}
    status, answer, _ = await call(admin_ingress, "POST", "/v1/identities", NEW, huge)
    assert (status, answer["error"]) == (413, "too_large")

    for path, field in (
        ("/v1/identities/alice/octocat", "github_user_id"),
        ("/v1/identities/alice/0", "github_user_id"),
        ("/v1/identities/%20alice/1", "platform_user"),
    ):
        status, answer, _ = await call(admin_ingress, "DELETE", path, NEW)
        assert (status, answer["error"], answer["message"].split(":")[0]) == (
            400, "bad_unlink", field
        )  # fmt: skip

    assert await identity_records(admin_ingress) == []


async def test_without_admin_tokens_the_endpoints_answer_404(ingress: RunningIngress) -> None:
    assert not ingress.settings.admin_tokens.get_secret_value()
    good = {"platform_user": "alice", "github_user_id": 583231}
    for method, path in (("POST", "/v1/identities"), ("DELETE", "/v1/identities/alice/583231")):
        status, answer, _ = await call(ingress, method, path, NEW, good)
        assert (status, answer) == (404, {
            "error": "disabled",
            "message": "identity endpoints are off: set HOOKSTREAM_ADMIN_TOKENS to enable them",
        })  # fmt: skip
    assert await identity_records(ingress) == []
