"""Identity links and unlinks, by HTTP or CSV: who may make them, and which are refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from deploy.identities import ImportRefused, parse_links
from ingress.delivery import Rejection
from ingress.identities import MAX_LINK_BYTES, authorize_admin, parse_link, parse_unlink
from schemas.identity import Link, Source, Unlink

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
JSON = "application/json"
TOKENS = (b"admin-old", b"admin-new")


def link(**fields: Any) -> Link:
    return parse_link(JSON, orjson.dumps(fields), NOW)


def refusal(**fields: Any) -> Rejection:
    with pytest.raises(Rejection) as info:
        link(**fields)
    return info.value


# --- who may link ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Bearer admin-old", "Bearer admin-new", "bearer  admin-new "])
def test_both_tokens_of_a_rotation_are_accepted(header: str) -> None:
    authorize_admin(header, TOKENS)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing 'Authorization: Bearer <token>' header"),
        ("admin-old", "missing 'Authorization: Bearer <token>' header"),
        ("Basic admin-old", "missing 'Authorization: Bearer <token>' header"),
        ("Bearer ", "missing 'Authorization: Bearer <token>' header"),
        ("Bearer admin-older", "unknown admin token"),
        ("Bearer runner-token", "unknown admin token"),
    ],
)
def test_a_missing_or_unknown_admin_token_is_refused_with_a_challenge(
    header: str | None, message: str
) -> None:
    with pytest.raises(Rejection) as info:
        authorize_admin(header, TOKENS)
    assert (info.value.status, info.value.reason, info.value.message) == (
        401, "unauthorized", message
    )  # fmt: skip
    assert info.value.headers == {"WWW-Authenticate": "Bearer"}


def test_without_admin_tokens_the_identity_endpoints_are_not_there() -> None:
    with pytest.raises(Rejection) as info:
        authorize_admin("Bearer admin-old", ())
    assert (info.value.status, info.value.reason, info.value.message) == (
        404, "disabled", "identity endpoints are off: set HOOKSTREAM_ADMIN_TOKENS to enable them"
    )  # fmt: skip


# --- POST /v1/identities --------------------------------------------------------------------


def test_a_link_by_id_is_recorded_as_an_api_link_with_a_fresh_event_id() -> None:
    made = link(platform_user="alice", github_user_id=583231, role="deployer")
    assert made.model_dump(exclude={"event_id"}) == {
        "kind": "link", "platform_user": "alice", "github_user_id": 583231,
        "github_login": None, "email": None, "role": "deployer", "source": Source.API, "at": NOW,
    }  # fmt: skip
    assert uuid.UUID(made.event_id).version == 4
    assert link(platform_user="alice", github_user_id=583231).event_id != made.event_id


@pytest.mark.parametrize(
    "fields",
    [
        {"platform_user": "bob", "github_login": "octo-cat"},
        {"platform_user": "bob", "github_login": "dependabot[bot]"},
        {"platform_user": "bob", "email": "Bob@Example.com"},
        {"platform_user": "u-42 (Bob)", "github_user_id": 7, "github_login": "bob", "role": None},
    ],
)
def test_a_link_may_name_a_login_or_an_email_instead_of_an_id(fields: dict[str, Any]) -> None:
    made = link(**fields)
    assert made.platform_user == fields["platform_user"]
    assert made.github_login == fields.get("github_login")


def test_a_content_type_with_parameters_is_json_too() -> None:
    body = orjson.dumps({"platform_user": "alice", "github_user_id": 1})
    assert parse_link("application/json; charset=utf-8", body, NOW).github_user_id == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"github_user_id": 1}, "platform_user: required"),
        ({"platform_user": "", "github_user_id": 1}, "platform_user: must be 1-200 characters"),
        ({"platform_user": "a/b", "github_user_id": 1}, "platform_user: must be"),
        ({"platform_user": 42, "github_user_id": 1}, "platform_user: must be"),
        ({"platform_user": "alice"}, "body: a link needs github_user_id, github_login or email"),
        ({"platform_user": "alice", "role": "admin"}, "body: a link needs github_user_id"),
        ({"platform_user": "alice", "github_user_id": 0}, "github_user_id: must be a positive"),
        ({"platform_user": "alice", "github_user_id": -3}, "github_user_id: must be a positive"),
        ({"platform_user": "alice", "github_user_id": "12"}, "github_user_id: must be a positive"),
        ({"platform_user": "alice", "github_user_id": 1.5}, "github_user_id: must be a positive"),
        ({"platform_user": "alice", "github_user_id": True}, "github_user_id: must be a positive"),
        ({"platform_user": "alice", "github_login": "-octocat"}, "github_login: must be a GitHub"),
        ({"platform_user": "alice", "github_login": "a" * 40}, "github_login: must be a GitHub"),
        ({"platform_user": "alice", "email": "alice"}, "email: must be an e-mail address"),
        ({"platform_user": "a", "github_user_id": 1, "role": "on call"}, "role: must be 1-64"),
        ({"platform_user": "a", "github_user_id": 1, "role": ""}, "role: must be 1-64"),
        ({"platform_user": "a", "github_user_id": 1, "team": "x"}, "team: unknown field"),
        ({"platform_user": "a", "github_user_id": 1, "source": "csv"}, "source: unknown field"),
        ({"platform_user": "a", "github_user_id": 1, "event_id": "e"}, "event_id: unknown field"),
    ],
)
def test_a_malformed_link_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    refused = refusal(**fields)
    assert (refused.status, refused.reason) == (400, "bad_link")
    assert message in refused.message


def test_every_bad_field_is_named_at_once() -> None:
    refused = refusal(platform_user="alice", github_user_id=0, role="on call")
    assert refused.message == (
        "github_user_id: must be a positive integer; "
        "role: must be 1-64 of [A-Za-z0-9_.:-], starting with a letter or a digit"
    )


@pytest.mark.parametrize(
    ("body", "message"), [(b"{", "body: not JSON: "), (b"", "body: not JSON: "),
                          (b"[1]", "body: must be a JSON object"),
                          (b'"alice"', "body: must be a JSON object")],
)  # fmt: skip
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_link(JSON, body, NOW)
    assert (info.value.status, info.value.message.startswith(message)) == (400, True)


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded"])
def test_a_link_that_is_not_json_is_refused_as_unsupported(content_type: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_link(content_type, b'{"platform_user": "a", "github_user_id": 1}', NOW)
    assert (info.value.status, info.value.reason) == (415, "unsupported_media_type")


def test_a_body_over_64_kib_is_refused_as_too_large() -> None:
    body = orjson.dumps({"platform_user": "a", "github_user_id": 1, "role": "x" * MAX_LINK_BYTES})
    with pytest.raises(Rejection) as info:
        parse_link(JSON, body, NOW)
    assert (info.value.status, info.value.reason) == (413, "too_large")


# --- DELETE /v1/identities/{platform_user}/{github_user_id} ---------------------------------


def test_an_unlink_names_the_person_and_the_account() -> None:
    made = parse_unlink("alice", "583231", NOW)
    assert isinstance(made, Unlink)
    assert (made.platform_user, made.github_user_id, made.source, made.at) == (
        "alice", 583231, Source.API, NOW
    )  # fmt: skip
    assert uuid.UUID(made.event_id).version == 4


@pytest.mark.parametrize(
    ("platform_user", "account", "message"),
    [
        ("alice", "0", "github_user_id: must be a positive integer"),
        ("alice", "-1", "github_user_id: must be a positive integer"),
        ("alice", "octocat", "github_user_id: must be a positive integer"),
        ("alice", "1" * 20, "github_user_id: must be a positive integer"),
        ("alice", "12\n", "github_user_id: must be a positive integer"),
        ("alice", "١٢", "github_user_id: must be a positive integer"),  # Arabic-Indic digits
        (" alice", "1", "platform_user: must be 1-200 characters"),
        ("a\x00lice", "1", "platform_user: must be 1-200 characters"),
    ],
)
def test_a_malformed_unlink_is_refused_naming_the_field(
    platform_user: str, account: str, message: str
) -> None:
    with pytest.raises(Rejection) as info:
        parse_unlink(platform_user, account, NOW)
    assert (info.value.status, info.value.reason) == (400, "bad_unlink")
    assert info.value.message.startswith(message)


# --- hookstream identities import: rows checked the same way --------------------------------

HEADER = "platform_user,github_login,github_user_id,email,role\n"


def test_csv_rows_become_csv_links_in_any_column_order() -> None:
    text = "role,email,github_user_id,github_login,platform_user\r\nadmin,,1,,alice\r\n\r\n"
    [made] = parse_links("people.csv", text, NOW)
    assert (made.platform_user, made.github_user_id, made.role, made.source) == (
        "alice", 1, "admin", Source.CSV
    )  # fmt: skip


def test_csv_links_are_ordered_as_the_rows_so_a_later_row_wins() -> None:
    text = HEADER + "alice,,1,,deployer\nbob,,1,,\nalice,,1,,admin\n"
    links = parse_links("people.csv", text, NOW)
    assert [(made.platform_user, made.role) for made in links] == [
        ("alice", "deployer"), ("bob", None), ("alice", "admin")
    ]  # fmt: skip
    assert NOW < links[0].at < links[1].at < links[2].at < NOW + timedelta(seconds=1)


def test_every_bad_csv_row_is_reported_with_its_line() -> None:
    text = HEADER + (
        "alice,octocat,583231,,deployer\n"
        "bob,,twelve,,\n"  # line 3
        '"carol\nsmith",,7,,\n'  # lines 4-5: a quoted cell across lines
        "dave,,8\n"  # line 6
        "erin,,,,\n"  # line 7
    )
    with pytest.raises(ImportRefused) as info:
        parse_links("people.csv", text, NOW)
    assert info.value.lines == [
        "people.csv:3: github_user_id: must be a positive integer",
        "people.csv:4: platform_user: must be 1-200 characters, without '/', control "
        "characters or leading whitespace",
        "people.csv:6: expected 5 cells, found 3",
        "people.csv:7: row: a link needs github_user_id, github_login or email",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "people.csv: empty file: the first line must be the header "
             "platform_user,github_login,github_user_id,email,role"),
        ("\n  \n", "people.csv: empty file"),
        ("platform_user,login,github_user_id,email\n", "people.csv:1: the header must name the "
         "columns platform_user,github_login,github_user_id,email,role, in any order "
         "(missing: github_login, role; unknown: login)"),
        ("alice,octocat,1,,\n", "people.csv:1: the header must name the columns"),
    ],
)  # fmt: skip
def test_a_csv_without_its_header_is_refused_with_one_error(text: str, message: str) -> None:
    with pytest.raises(ImportRefused) as info:
        parse_links("people.csv", text, NOW)
    [line] = info.value.lines
    assert line.startswith(message)
