"""A real idlink server in a subprocess, and clients for it.

The server (``tests/server.py``) runs ``idlink serve`` on a free loopback port
over a store in a temporary folder; the fixture waits (bounded) until the
health service says SERVING and stops the process by its PID at the end.

Authentication is always on. :class:`Client` sends, on every call, an admin
key of the account the request names, created in the server's store the first
time that account is seen (as ``idlink keys create`` does while a server runs).
"""

from __future__ import annotations

import collections
import itertools
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from idlink.v1 import admin_pb2_grpc, common_pb2, identity_pb2_grpc, profile_pb2_grpc
from tests.server import Server, served

# Data folder of each running test server, by target, so a Client finds where to make keys.
DATA_BY_TARGET: dict[str, Path] = {}
_TOKENS: dict[tuple[str, str], str] = {}
_TOKENS_LOCK = threading.Lock()


def admin_token(data: Path, account: str, role: str = "admin") -> str:
    """A key of ``role`` for ``account`` in the store of ``data`` (made once per test run)."""
    from idlink.security.apikeys import create_key

    with _TOKENS_LOCK:
        key = (f"{data}|{role}", account)
        if key not in _TOKENS:
            _TOKENS[key] = create_key(data, account, role)
        return _TOKENS[key]


def key(type_: str, value: str, source: str = "") -> common_pb2.ContactKey:
    """A contact key as a request names it."""
    return common_pb2.ContactKey(type=type_, value=value, source=source)


class ServerProcess(Server):
    """The shared test server, registered so that a :class:`Client` finds its store."""

    def __init__(self, data: Path, *extra_args: str) -> None:
        super().__init__(data, "--grace", "5", *extra_args)

    def start(self, *, wait: bool = True) -> ServerProcess:
        super().start(wait=wait)
        DATA_BY_TARGET[self.target] = self.data
        return self


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


def _account_of(request: Any) -> str:
    account = getattr(request, "account", "")
    if not account and hasattr(request, "schema"):
        account = request.schema.account
    return str(account)


class AdminKeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <admin key of the request's account>`` to every call."""

    def __init__(self, data: Path) -> None:
        self.data = data

    def _details(self, details: grpc.ClientCallDetails, request: Any) -> grpc.ClientCallDetails:
        # A request without an account still authenticates (it is then refused as malformed).
        account = (_account_of(request) if request is not None else "") or "acct-default"
        metadata = list(details.metadata or ())
        if not any(k == "authorization" for k, _ in metadata):
            metadata.append(("authorization", f"Bearer {admin_token(self.data, account)}"))
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    @staticmethod
    def _peek(requests: Any) -> tuple[Any, Any]:
        iterator = iter(requests)
        try:
            first = next(iterator)
        except StopIteration:
            return None, iter(())
        return first, itertools.chain([first], iterator)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details, request), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details, request), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        first, requests = self._peek(requests)
        return continuation(self._details(details, first), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        first, requests = self._peek(requests)
        return continuation(self._details(details, first), requests)


class Client:
    """Stubs of the three services over one channel, authenticated as each account's admin."""

    def __init__(self, target: str) -> None:
        self.raw_channel = grpc.insecure_channel(target)
        data = DATA_BY_TARGET.get(target)
        self.channel = (
            grpc.intercept_channel(self.raw_channel, AdminKeyInterceptor(data))
            if data is not None
            else self.raw_channel
        )
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.profile = profile_pb2_grpc.ProfileServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.raw_channel.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the session; tests keep apart by using their own account."""
    with served(ServerProcess(tmp_path_factory.mktemp("server") / "data")) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> Iterator[Client]:
    opened = Client(server.target)
    yield opened
    opened.close()


@pytest.fixture
def account() -> str:
    """A fresh account: nothing any other test did is visible in it."""
    return f"acct-{uuid.uuid4().hex[:12]}"


def error_details(error: grpc.RpcError) -> dict[str, str]:
    """The trailing metadata idlink puts on an error (reason, field)."""
    return {m.key: m.value for m in (error.trailing_metadata() or ())}  # type: ignore[attr-defined]
