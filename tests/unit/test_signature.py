"""Signature verification: GitHub's documented test vector, rotation, and every bad form."""

from __future__ import annotations

import pytest

from schemas.signature import InvalidSignature, SignatureVerifier, sign

# From GitHub's "Validating webhook deliveries" documentation.
DOC_SECRET = b"It's a Secret to Everybody"
DOC_BODY = b"Hello, World!"
DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_sign_matches_githubs_documented_example() -> None:
    assert sign(DOC_BODY, DOC_SECRET) == DOC_SIGNATURE


def test_verify_accepts_the_documented_signature() -> None:
    SignatureVerifier([DOC_SECRET]).verify(DOC_BODY, DOC_SIGNATURE)


def test_any_configured_secret_is_accepted() -> None:
    verifier = SignatureVerifier([b"old", b"new"])
    verifier.verify(b"{}", sign(b"{}", b"old"))
    verifier.verify(b"{}", sign(b"{}", b"new"))
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier.verify(b"{}", sign(b"{}", b"other"))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("sha1=0123456789abcdef0123456789abcdef01234567", "sha256="),
        ("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "sha256="),
        ("sha256=not-hex", "not a hex digest"),
        ("sha256=" + "00" * 32, "does not match"),
        ("sha256=" + "75" * 16, "does not match"),  # a truncated digest
    ],
)
def test_bad_signatures_are_refused_with_a_reason(header: str | None, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        SignatureVerifier([DOC_SECRET]).verify(DOC_BODY, header)


def test_a_changed_body_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        SignatureVerifier([DOC_SECRET]).verify(DOC_BODY + b" ", DOC_SIGNATURE)


def test_no_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="secret"):
        SignatureVerifier([])
