"""The unit tier runs offline: any network connection fails the test that makes it."""

from __future__ import annotations

import socket
from typing import Any

import pytest


class NetworkInUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_UNIX:  # a local pipe, not the network
            real_connect(self, address)
            return
        raise NetworkInUnitTest(f"the unit tier must not use the network (connect to {address})")

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        guarded_connect(self, address)
        return 0

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
