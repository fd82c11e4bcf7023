"""``hookstream send``: sign a payload and post it to an ingress the way GitHub does.

This is how a user tries the system without GitHub, and how tests and benchmarks
produce deliveries: the headers and signature are exactly those GitHub sends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from schemas.envelope import FORM_CONTENT_TYPE, JSON_CONTENT_TYPE
from schemas.signature import sign


@dataclass(frozen=True)
class SignedDelivery:
    body: bytes
    headers: dict[str, str]

    @property
    def delivery_id(self) -> str:
        return self.headers["X-GitHub-Delivery"]


def signed_delivery(
    payload: bytes,
    event: str,
    secret: bytes,
    *,
    delivery_id: str | None = None,
    hook_id: str = "1",
    form: bool = False,
    installation_target: tuple[str, str] | None = None,
) -> SignedDelivery:
    """Build the body and headers of one delivery; ``form`` sends ``payload=`` encoded."""
    body = urlencode({"payload": payload.decode()}).encode() if form else payload
    headers = {
        "Content-Type": FORM_CONTENT_TYPE if form else JSON_CONTENT_TYPE,
        "User-Agent": "GitHub-Hookshot/hookstream-send",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": hook_id,
        "X-Hub-Signature-256": sign(body, secret),
    }
    if installation_target:
        headers["X-GitHub-Hook-Installation-Target-Type"] = installation_target[0]
        headers["X-GitHub-Hook-Installation-Target-ID"] = installation_target[1]
    return SignedDelivery(body, headers)


async def post(url: str, delivery: SignedDelivery, seconds: float = 15.0) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
        session.post(url, data=delivery.body, headers=delivery.headers) as response,
    ):
        return response.status, await response.text()


def installation_target(payload: dict[str, object]) -> tuple[str, str] | None:
    """The ``X-GitHub-Hook-Installation-Target-*`` pair a repository or org hook would send."""
    for kind in ("repository", "organization"):
        part = payload.get(kind)
        if isinstance(part, dict) and "id" in part:
            return kind, str(part["id"])
    return None
