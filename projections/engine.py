"""A process of its own for the ClickHouse client, driven by messages.

chdb allows one engine per process, and clickhouse-connect serializes every insert's
columns in Python: on a thread of the worker, that work and the worker's own (reading
Kafka, parsing payloads, extracting rows) take turns on one interpreter. Here the client
lives in a child process (``multiprocessing``'s spawn context), so both run at once.

The parent sends ``(function, args, kwargs)``; the child runs ``function(state, *args,
**kwargs)`` on the state it was started with and sends back the result, or the
exception the call raised, which :meth:`EngineProcess.call` raises again in the parent
(a :class:`~projections.query.QueryError` stays a ``QueryError``, with ClickHouse's
message). Functions and arguments travel by pickle: module-level functions, not
closures. One call at a time: the caller serializes its calls (the sink does, on its
one engine thread).

The child lives and dies with its parent: it leaves when the parent closes the pipe,
and a watcher thread ends it as soon as the parent is gone (a SIGKILLed worker must not
leave an orphan holding the chdb data path). Ctrl-C in a terminal reaches the whole
process group; the child ignores it and stops when the worker stops it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from schemas.errors import HookstreamError

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
P = ParamSpec("P")

PARENT_CHECK_S = 0.2
STOP_TIMEOUT_S = 30.0


class EngineError(HookstreamError):
    """The engine process is gone, or a call's exception or result could not travel."""


class EngineProcess(Generic[S]):
    """A child process that holds ``state`` and runs functions on it, one at a time."""

    def __init__(self, state: S, name: str = "hookstream-engine") -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=serve, args=(child, state, os.getpid()), name=name, daemon=True
        )
        self._process.start()
        child.close()
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def call(
        self, function: Callable[Concatenate[S, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``function(state, *args, **kwargs)`` in the child; its exception is raised here."""
        if self._closed:
            raise EngineError("the engine process is closed")
        try:
            self._conn.send((function, args, kwargs))
            ok, value = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self._process.join(timeout=5)
            raise EngineError(
                f"the engine process exited (code {self._process.exitcode})"
            ) from None
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask the child to leave after its current call; kill it if it does not."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._conn.close()  # the child reads EOF and leaves
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("the engine process did not stop within %g s; killing it", timeout)
            self._process.kill()
            self._process.join(5)


# --- the child ------------------------------------------------------------------------------
def serve(conn: Connection, state: Any, parent: int) -> None:
    """The child's loop: run each call on ``state`` until the parent leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        while True:
            try:
                function, args, kwargs = conn.recv()
            except (EOFError, OSError):
                break
            try:
                reply: tuple[bool, Any] = (True, function(state, *args, **kwargs))
            except BaseException as exc:  # every failure goes back to the caller
                reply = (False, _portable(exc))
            try:
                conn.send(reply)
            except (BrokenPipeError, OSError):
                break
            except Exception as exc:  # the result does not pickle
                conn.send((False, EngineError(f"the result could not be returned: {exc!r}")))
    finally:
        close = getattr(state, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else an :class:`EngineError` that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return EngineError(f"in the engine process: {text}")
    return exc


def _watch_parent(parent: int) -> None:
    # Reparented means the parent died, SIGKILL included: leave at once, without cleanup
    # (the engine's files are released with the process).
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    sys.stderr.flush()
    os._exit(0)
