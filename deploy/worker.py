"""Running a processor's Faust app as a worker process (``hookstream worker NAME``)."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading

import faust
import uvloop

from processors.records import faust_topic_specs
from schemas.logs import configure_logging
from schemas.settings import Settings
from schemas.topics import ensure_topics, topic_specs

log = logging.getLogger("hookstream.worker")

EX_SOFTWARE = 70


class Worker(faust.Worker):
    """Faust's worker, with a bounded stop.

    A stop that hangs (a Kafka client thread that never finishes, say) would keep the
    process, and a deploy, waiting for ever. After ``HOOKSTREAM_STOP_TIMEOUT_S`` the
    worker writes every thread's stack to stderr, so the hang can be diagnosed, and
    exits with 70. Offsets are committed early in a stop, so no work is lost: the
    next worker starts from them, as after a crash.
    """

    def __init__(self, app: faust.App, stop_timeout_s: float) -> None:
        # hookstream's JSON lines, not Faust's own format, and no terminal spinner.
        super().__init__(app, quiet=True, override_logging=False, redirect_stdouts=False)
        self.spinner = None
        self.stop_timeout_s = stop_timeout_s

    async def on_stop(self) -> None:
        deadline = threading.Timer(self.stop_timeout_s, self._stop_took_too_long)
        deadline.daemon = True
        deadline.start()
        await super().on_stop()

    def _stop_took_too_long(self) -> None:
        log.critical(
            "the worker did not stop within %g s (HOOKSTREAM_STOP_TIMEOUT_S); "
            "the stacks of its threads follow on stderr; exiting with %d",
            self.stop_timeout_s, EX_SOFTWARE,
        )  # fmt: skip
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EX_SOFTWARE)


def run_worker(app: faust.App, settings: Settings) -> None:
    """Create the project's topics if missing, then run ``app`` until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    topics = topic_specs(settings) + faust_topic_specs(app, settings)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topics))
    # Faust spends much of its time in the event loop itself; uvloop's is faster.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(app, settings.stop_timeout_s).execute_from_commandline()
