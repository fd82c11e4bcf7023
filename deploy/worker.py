"""Running a processor's Faust app as a worker process (``hookstream worker NAME``)."""

from __future__ import annotations

import asyncio

import faust
import uvloop

from schemas.logs import configure_logging
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs


def run_worker(app: faust.App, settings: Settings) -> None:
    """Create the project's topics if missing, then run ``app`` until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    # Faust spends much of its time in the event loop itself; uvloop's is faster.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    # hookstream's JSON lines, not Faust's own format, and no terminal spinner.
    worker = faust.Worker(app, quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()
