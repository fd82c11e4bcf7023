"""Waiting for ClickHouse's background merges, so that queries are not timed against them."""

from __future__ import annotations

import asyncio
import time

from projections.sink import ClickHouseSink


async def wait_for_merges(sink: ClickHouseSink, limit_s: float) -> None:
    """Until no merge runs, or ``limit_s`` has passed."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        merges = await sink.run(lambda c: c.query("SELECT count() FROM system.merges").result_rows)
        if int(merges[0][0]) == 0:
            return
        await asyncio.sleep(1.0)
