"""Fixtures: the real Kafka broker, the example corpus, a running ingress.

The broker comes, in this order of preference, from a Kafka container when
``HOOKSTREAM_TEST_DOCKER=1`` (needs a Docker engine; none on the development machines),
from ``HOOKSTREAM_KAFKA_BOOTSTRAP`` when that points at a running broker, or from
:class:`deploy.broker.LocalBroker` — the same code as ``hookstream kafka up`` — started
on free ports in a temporary data dir. Shared helpers are in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deploy import corpus
from tests.helpers import (
    CACHE_DIR,
    RunningIngress,
    local_broker,
    make_settings,
    start_ingress,
    stop_ingress,
)


@pytest.fixture(scope="session")
def examples() -> tuple[corpus.Example, ...]:
    corpus.fetch(CACHE_DIR)
    return corpus.load(CACHE_DIR)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("HOOKSTREAM_TEST_DOCKER") == "1":
        from testcontainers.community.kafka import KafkaContainer

        # Confluent Platform 8.1 ships Apache Kafka 4.1, the version the local runtime pins.
        with KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    if external := os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP"):
        yield external
        return
    broker = local_broker(tmp_path_factory.mktemp("kafka-session"))
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


@pytest.fixture
async def ingress(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[RunningIngress]:
    server, running = await start_ingress(make_settings(kafka_bootstrap, tmp_path))
    await running.wait_ready()
    yield running
    await stop_ingress(server, running)
