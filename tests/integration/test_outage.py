"""Broker outage: 503 within the deadline, nothing claims success, nothing acked is lost."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from deploy.send import signed_delivery
from schemas.envelope import RecordHeader
from tests.helpers import (
    SECRET,
    local_broker,
    make_settings,
    read_topic,
    start_ingress,
    stop_ingress,
)

pytestmark = pytest.mark.integration

# GitHub gives up on a delivery after 10 s; the ingress must answer well before.
GITHUB_TIMEOUT_S = 10.0


async def test_outage_answers_503_then_recovers_without_loss(tmp_path: Path) -> None:
    broker = local_broker(tmp_path / "broker")
    broker.up()
    settings = make_settings(broker.bootstrap, tmp_path, ingress_produce_timeout_s=2.0)
    server, ingress = await start_ingress(settings)
    try:
        await ingress.wait_ready()
        before = signed_delivery(b'{"zen": "before", "sender": {"id": 1}}', "ping", SECRET)
        assert (await ingress.post(before))[0] == 202

        broker.down()
        during = signed_delivery(b'{"zen": "during", "sender": {"id": 1}}', "ping", SECRET)
        started = time.monotonic()
        status, answer = await ingress.post(during)
        assert status == 503
        assert "unavailable" in answer["message"]
        assert time.monotonic() - started < GITHUB_TIMEOUT_S
        await ingress.wait_ready(503)

        broker.up()
        await ingress.wait_ready(200, within=60)
        # GitHub's redelivery: the same GUID and body.
        status, answer = await ingress.post(during)
        assert (status, answer) == (202, {"delivery": during.delivery_id})
    finally:
        await stop_ingress(server, ingress)
        broker.down()
    broker.up()
    try:
        records = await read_topic(settings)
    finally:
        broker.down()
    counts = Counter(dict(r.headers)[RecordHeader.DELIVERY].decode() for r in records)
    assert counts[before.delivery_id] == 1
    # The 503'd attempt may still have reached the log once the broker came back (the
    # producer cannot recall a record it already handed to the network); the
    # acknowledged redelivery must be there, and duplicates are collapsed downstream by
    # (hook id, delivery GUID).
    assert 1 <= counts[during.delivery_id] <= 2
    assert set(counts) == {before.delivery_id, during.delivery_id}
