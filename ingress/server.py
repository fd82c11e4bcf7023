"""Serving the ingress: one process, or several sharing the port with SO_REUSEPORT.

One Python process tops out at one core; with ``HOOKSTREAM_INGRESS_WORKERS=N`` the
kernel spreads connections over N processes, each with its own producer.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import sys

import uvloop
from aiohttp import web

from ingress.app import MissingSecret, create_app
from schemas.logs import configure_logging
from schemas.settings import Settings

log = logging.getLogger(__name__)


def _serve(settings: Settings, reuse_port: bool) -> None:
    configure_logging(settings.log_level)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(settings),
        host=settings.ingress_host,
        port=settings.ingress_port,
        reuse_port=reuse_port,
        access_log=None,
        print=None,
        handle_signals=True,
    )


def serve(settings: Settings) -> None:
    """Run the ingress until SIGINT/SIGTERM."""
    if not settings.secrets:
        raise MissingSecret()  # in the parent, before any worker process starts
    log.info(
        "ingress listening on http://%s:%d/webhooks/github (%d process%s)",
        settings.ingress_host,
        settings.ingress_port,
        settings.ingress_workers,
        "" if settings.ingress_workers == 1 else "es",
    )
    if settings.ingress_workers == 1:
        _serve(settings, reuse_port=False)
        return
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_serve, args=(settings, True), name=f"ingress-{i}", daemon=True)
        for i in range(settings.ingress_workers)
    ]
    for w in workers:
        w.start()

    def _stop(signum: int, frame: object) -> None:
        for w in workers:
            if w.is_alive() and w.pid is not None:
                w.terminate()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for w in workers:
        w.join()
    codes = [w.exitcode for w in workers]
    if any(code not in (0, -signal.SIGTERM) for code in codes):
        sys.exit(f"ingress workers exited with {codes}")
