"""GitHub webhook signatures: HMAC-SHA256 over the raw body, ``X-Hub-Signature-256``.

Several secrets may be valid at once so that a secret can be rotated without losing
deliveries: a signature made with any of them is accepted. Comparison is constant-time.
SHA-1 signatures (``X-Hub-Signature``) are deliberately not accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from schemas.errors import HookstreamError

PREFIX = "sha256="


class InvalidSignature(HookstreamError):
    """The delivery's signature is missing, malformed, or made with an unknown secret."""


def sign(body: bytes, secret: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


class SignatureVerifier:
    """Checks ``X-Hub-Signature-256`` against every configured secret."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        # Keyed HMAC objects are prepared once; copy() skips re-deriving the key pads.
        self._keyed = [hmac.new(s, digestmod=hashlib.sha256) for s in secrets]
        if not self._keyed:
            raise ValueError("at least one webhook secret is required")

    def verify(self, body: bytes, header: str | None) -> None:
        if not header:
            raise InvalidSignature("missing X-Hub-Signature-256 header")
        if not header.startswith(PREFIX):
            raise InvalidSignature("X-Hub-Signature-256 must be 'sha256=<hex digest>'")
        try:
            given = bytes.fromhex(header[len(PREFIX) :])
        except ValueError:
            raise InvalidSignature("X-Hub-Signature-256 is not a hex digest") from None
        matched = False
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(body)
            # No early exit: the time taken does not tell which secret matched.
            matched |= hmac.compare_digest(mac.digest(), given)
        if not matched:
            raise InvalidSignature("signature does not match any configured secret")
