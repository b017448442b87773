"""A real idlink server in a subprocess, and clients for it.

The server runs as ``python -m idlink.service.server`` on a free loopback port
over a store in a temporary folder; the fixture waits (bounded) until the
health service says SERVING and stops the process by its PID at the end:
SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idlink.v1 import admin_pb2_grpc, identity_pb2_grpc, profile_pb2_grpc

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


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


class Client:
    """Stubs of the three services over one channel."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.profile = profile_pb2_grpc.ProfileServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


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
