"""Running a processor's Faust app as a worker process (``hookstream worker NAME``)."""

from __future__ import annotations

import asyncio
import logging

import faust
import uvloop

from deploy.topics import ensure_topics, topic_specs
from schemas.settings import Settings


def run_worker(app: faust.App, settings: Settings) -> None:
    """Create the project's topics if missing, then run ``app`` until SIGINT/SIGTERM."""
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    # Faust spends much of its time in the event loop itself; uvloop's is faster.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    level = logging.getLevelName(settings.log_level.upper())
    # Faust, mode and aiokafka narrate every rebalance and table recovery at INFO; keep
    # them to warnings unless debugging, so the processors' own lines stay readable.
    for chatty in ("faust", "mode", "aiokafka"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    faust.Worker(app, loglevel=level, quiet=True).execute_from_commandline()
