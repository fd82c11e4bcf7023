"""The base of hookstream's own exceptions: callers catch one type.

Every error hookstream raises on purpose derives from :class:`HookstreamError` and says
in its message what went wrong and, where there is one, what to do about it; the CLI
prints that message and exits 1 (2 for a usage mistake), without a traceback.
"""

from __future__ import annotations


class HookstreamError(Exception):
    """An error of hookstream's own, with a message meant for the person reading it."""
