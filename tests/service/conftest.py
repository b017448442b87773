"""A real idlink server in a subprocess, and clients for it.

The server runs as ``python -m idlink.service.server`` on a free loopback port
over a store in a temporary folder; the fixture waits (bounded) until the
health service says SERVING and stops the process by its PID at the end:
SIGTERM, then SIGKILL if it does not exit in time.

Authentication is always on. :class:`Client` sends, on every call, an admin
key of the account the request names, created in the server's store the first
time that account is seen (as ``idlink keys create`` does while a server runs).
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idlink.v1 import admin_pb2_grpc, identity_pb2_grpc, profile_pb2_grpc

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One server subprocess over one data folder."""

    def __init__(self, data: Path, *extra_args: str) -> None:
        self.data = data
        self.extra_args = extra_args
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data.parent / f"{data.name}-server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.port = free_port()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idlink.service.server",
                "--data",
                str(self.data),
                "--listen",
                self.target,
                "--grace",
                "5",
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
            env=dict(os.environ),
        )
        log.close()
        DATA_BY_TARGET[self.target] = self.data
        self.wait_serving()
        return self

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited at start:\n{self.log()}")
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not SERVING after {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a timeout; the exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                return process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return None
        return process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


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
    running = ServerProcess(tmp_path_factory.mktemp("server") / "data").start()
    yield running
    status = running.stop()
    assert status == 0, f"server did not shut down cleanly ({status}):\n{running.log()[-4000:]}"
    assert "Traceback" not in running.log(), running.log()[-4000:]


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
