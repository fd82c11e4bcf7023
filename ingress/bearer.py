"""Bearer-token authorization, shared by the endpoints that are not GitHub's, without I/O.

Runners (``HOOKSTREAM_RUNNER_TOKENS``) and admins (``HOOKSTREAM_ADMIN_TOKENS``) present
``Authorization: Bearer <token>``. Each variable may hold several comma-separated tokens
so that one can be rotated while another works; an unset variable turns its endpoints
off (404). Failures raise :class:`ingress.delivery.Rejection`.
"""

from __future__ import annotations

import hmac

from ingress.delivery import Rejection

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authorize_bearer(
    authorization: str | None,
    tokens: tuple[bytes, ...],
    *,
    holder: str,
    endpoints: str,
    variable: str,
) -> None:
    """Accept a request whose bearer token is one of ``tokens``, else raise the refusal.

    ``holder`` names who holds the tokens ("runner"), ``endpoints`` what they open
    ("runner status reports") and ``variable`` where they are configured.
    """
    if not tokens:
        raise Rejection(404, "disabled", f"{endpoints} are off: set {variable} to enable them")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Rejection(
            401, "unauthorized", "missing 'Authorization: Bearer <token>' header", CHALLENGE
        )
    # Compare against every token, without an early exit, like webhook secrets.
    presented = given.strip().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(token, presented)
    if not matched:
        raise Rejection(401, "unauthorized", f"unknown {holder} token", CHALLENGE)
