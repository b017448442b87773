"""A real idlink server for the client tests, and keys for it.

The server (``tests/server.py``) keeps its port, so a test can kill it and
start it again where a client expects it. Each test uses its own account and
an admin key of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from idlink.client import IdlinkClient
from tests.server import Server, free_port, make_token, served


def restartable_server(data: Path) -> Server:
    """A server that keeps its port across restarts, as a client sees a crash and a restart."""
    return Server(data, "--grace", "5", port=free_port())


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the client tests; tests keep apart by using their own account."""
    with served(restartable_server(tmp_path_factory.mktemp("client-server") / "data")) as running:
        yield running


@pytest.fixture
def account() -> str:
    """A fresh account: nothing any other test did is visible in it."""
    return f"acct-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def token(server: Server, account: str) -> str:
    """An admin key of the test's account."""
    return make_token(server.data, account)


@pytest.fixture
def idlink(server: Server, token: str) -> Iterator[IdlinkClient]:
    """An IdlinkClient of the test's account's key."""
    with IdlinkClient(server.target, token, timeout=5.0) as opened:
        yield opened
