"""Explicit identity links over HTTP (DESIGN.md §8), without I/O.

``POST /v1/identities`` links a platform user to a GitHub account (by id, else by login)
and/or an e-mail; ``DELETE /v1/identities/{platform_user}/{github_user_id}`` unlinks one
account. Both need an admin bearer token (``HOOKSTREAM_ADMIN_TOKENS``) and become one
event each on ``hookstream.identity``: :class:`schemas.identity.Link` or
:class:`schemas.identity.Unlink`. Failures raise :class:`ingress.delivery.Rejection`.

:func:`build_link` is also how ``hookstream identities import`` checks a CSV row, so a
link is refused for the same reasons, in the same words, whichever way it arrives.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ingress.bearer import authorize_bearer
from ingress.delivery import Rejection
from schemas.envelope import JSON_CONTENT_TYPE
from schemas.errors import HookstreamError
from schemas.identity import Link, Source, Unlink

MAX_LINK_BYTES = 64 * 1024
# What a client may say in a link; the rest (event_id, at, source) is the ingress's to say.
LINK_FIELDS = ("platform_user", "github_user_id", "github_login", "email", "role")
# Path segments of an unlink: at most 19 digits keeps an account id within 64 bits.
_ACCOUNT_ID = re.compile(r"[0-9]{1,19}")
MAX_PROBLEMS = 5

M = TypeVar("M", bound=BaseModel)

# A field's constraint in words, instead of pydantic's (which quotes a regular expression).
_FIELD_RULES = {
    "platform_user": "must be 1-200 characters, without '/', control characters or "
    "leading whitespace",
    "github_user_id": "must be a positive integer",
    "github_login": "must be a GitHub login (letters, digits and single hyphens, at most 39, "
    "optionally ending in [bot])",
    "email": "must be an e-mail address (at most 320 characters)",
    "role": "must be 1-64 of [A-Za-z0-9_.:-], starting with a letter or a digit",
}


class InvalidIdentity(HookstreamError):
    """A link or unlink that names something wrongly; the message names each field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def authorize_admin(authorization: str | None, tokens: tuple[bytes, ...]) -> None:
    authorize_bearer(
        authorization,
        tokens,
        holder="admin",
        endpoints="identity endpoints",
        variable="HOOKSTREAM_ADMIN_TOKENS",
    )


def new_event_id() -> str:
    return str(uuid.uuid4())


def build_link(
    fields: Mapping[str, Any], source: Source, at: datetime, *, whole: str = "body"
) -> Link:
    """A :class:`Link` from what a person wrote (JSON values; ``None`` = absent).

    ``whole`` is what a problem of no single field is reported against (a CSV "row").
    """
    unknown = [name for name in fields if name not in LINK_FIELDS]
    if unknown:
        raise InvalidIdentity(
            [f"{name}: unknown field (expected {', '.join(LINK_FIELDS)})" for name in unknown]
        )
    # Strict: "42" or true is not an account id, as JSON types go.
    event = {**fields, "event_id": new_event_id(), "at": at, "source": source}
    return _validated(Link, event, whole)


def parse_link(content_type: str, body: bytes, now: datetime) -> Link:
    """The body of ``POST /v1/identities`` as the Link to record."""
    if len(body) > MAX_LINK_BYTES:
        raise Rejection(413, "too_large", f"body exceeds {MAX_LINK_BYTES} bytes")
    if content_type.split(";", 1)[0].strip().lower() != JSON_CONTENT_TYPE:
        raise Rejection(415, "unsupported_media_type", "content type must be application/json")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "bad_link", f"body: not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise Rejection(400, "bad_link", "body: must be a JSON object")
    try:
        return build_link(fields, Source.API, now)
    except InvalidIdentity as exc:
        raise Rejection(400, "bad_link", str(exc)) from None


def parse_unlink(platform_user: str, github_user_id: str, now: datetime) -> Unlink:
    """The path of ``DELETE /v1/identities/{platform_user}/{github_user_id}`` as an Unlink."""
    account: int | str = int(github_user_id) if _ACCOUNT_ID.fullmatch(github_user_id) else ""
    try:
        return _validated(
            Unlink,
            {
                "platform_user": platform_user,
                "github_user_id": account,
                "event_id": new_event_id(),
                "at": now,
                "source": Source.API,
            },
            "path",
        )
    except InvalidIdentity as exc:
        raise Rejection(400, "bad_unlink", str(exc)) from None


def _validated(model: type[M], values: dict[str, Any], whole: str) -> M:
    try:
        return model.model_validate(values, strict=True)
    except ValidationError as exc:
        raise InvalidIdentity([_problem(e, whole) for e in exc.errors()[:MAX_PROBLEMS]]) from None


def _problem(error: ErrorDetails, whole: str) -> str:
    field = ".".join(str(part) for part in error["loc"]) or whole
    if error["type"] == "missing":
        return f"{field}: required"
    if field in _FIELD_RULES:
        return f"{field}: {_FIELD_RULES[field]}"
    return f"{field}: {error['msg'].removeprefix('Value error, ')}"
