"""A real server for the security tests, and keys of every role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from idlink.security.apikeys import create_key
from idlink.v1 import admin_pb2_grpc, identity_pb2_grpc, profile_pb2_grpc
from tests import helpers
from tests.server import served
from tests.service.conftest import ServerProcess

ROLES = ("reader", "writer", "agent", "admin")


class Stubs:
    """The three services over one plain channel; the caller passes its token per call."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.profile = profile_pb2_grpc.ProfileServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def link(stubs: Stubs, token: str, account: str, record_id: str, *contacts, seconds: int = 0):
    """tests.helpers.link with a key's token."""
    return helpers.link(
        stubs, account, record_id, *contacts, seconds=seconds, metadata=auth(token), timeout=10
    )


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with served(ServerProcess(tmp_path_factory.mktemp("security") / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def stubs(secure_server: ServerProcess) -> Iterator[Stubs]:
    opened = Stubs(secure_server.target)
    yield opened
    opened.close()


@pytest.fixture
def account() -> str:
    return f"sec-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tokens(secure_server: ServerProcess, account: str) -> dict[str, str]:
    """A key of every role for the test's account (made as `idlink keys create` does)."""
    return {role: create_key(secure_server.data, account, role) for role in ROLES}
