"""The unit tier's own rule: no network, and no corpus download."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.helpers import sample_names
from tests.unit.conftest import NetworkInUnitTest


def test_a_connection_fails_the_test() -> None:
    with socket.socket() as sock, pytest.raises(NetworkInUnitTest):
        sock.connect(("127.0.0.1", 9))


def test_an_asyncio_connection_fails_the_test() -> None:
    async def connect() -> None:
        await asyncio.open_connection("127.0.0.1", 9)

    with pytest.raises(NetworkInUnitTest):
        asyncio.run(connect())


def test_the_samples_are_real_payloads_of_several_events() -> None:
    names = sample_names()
    assert len(names) >= 15
    assert {"push", "pull_request", "issue_comment", "check_run"} <= {
        n.split(".")[0].split("#")[0] for n in names
    }
