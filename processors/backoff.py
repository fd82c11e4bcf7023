"""Exponential backoff with full jitter (AWS's "full jitter"): how long to wait to retry."""

from __future__ import annotations


def full_jitter(failed_attempt: int, base_s: float, cap_s: float, jitter: float) -> float:
    """A wait in [0, min(cap, base * 2^(attempt-1))); ``jitter`` is uniform in [0, 1)."""
    return jitter * min(cap_s, base_s * 2.0 ** (failed_attempt - 1))
