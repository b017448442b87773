"""A real idlink server in a subprocess for the client tests, and keys for it.

Like ``tests/service/conftest.py``, but the server can be killed (SIGKILL) and
started again on the same data folder and port, as a client sees a crash.
Keys are created with ``idlink.security.apikeys.create_key`` for each test's
own account, and every client sends its token.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idlink.client import IdlinkClient
from tests.service.conftest import free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class Server:
    """One server subprocess over one data folder, on a port kept across restarts."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data.parent / f"{data.name}-server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
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
            ],
            stdout=log,
            stderr=log,
            env=dict(os.environ),
        )
        log.close()
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
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not SERVING after {START_TIMEOUT} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the server dies at whatever point it is."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

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


def make_token(data: Path, account: str, role: str = "admin") -> str:
    """A new API key of ``role`` for ``account`` in the store of ``data``."""
    from idlink.security.apikeys import create_key

    return create_key(data, account, role)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the client tests; tests keep apart by using their own account."""
    running = Server(tmp_path_factory.mktemp("client-server") / "data").start()
    yield running
    status = running.stop()
    assert status == 0, f"server did not shut down cleanly ({status}):\n{running.log()[-4000:]}"
    assert "Traceback" not in running.log(), running.log()[-4000:]


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
