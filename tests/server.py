"""A real idlink server in a subprocess, for every suite that needs one.

``python -m idlink serve`` on 127.0.0.1 over a data folder that outlives the
process, so a test can stop it (SIGTERM), kill it (SIGKILL, by PID), start it
again on the same folder (and port, when fixed) and look at the store offline
afterwards. Every wait is bounded. Keys are made in the store with
``idlink.security.apikeys.create_key``, what ``idlink keys create`` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idlink.security.apikeys import create_key

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_token(data: Path, account: str, role: str = "admin") -> str:
    """A new API key of ``role`` for ``account`` in the store of ``data``."""
    return create_key(data, account, role)


class Server:
    """One ``idlink serve`` subprocess over one data folder, restartable."""

    def __init__(
        self, data: Path, *extra_args: str, port: int = 0, log_dir: Path | None = None
    ) -> None:
        self.data = data
        self.extra_args = extra_args
        self.fixed_port = port
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = (log_dir or data.parent) / f"{data.name}-server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, wait: bool = True) -> Server:
        self.port = self.fixed_port or free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "idlink",
                    "serve",
                    "--data",
                    str(self.data),
                    "--listen",
                    self.target,
                    *self.extra_args,
                ],
                stdout=log,
                stderr=log,
                env=dict(os.environ),
            )
        if wait:
            self.wait_serving()
        return self

    def health(self, timeout: float = 1.0) -> int | None:
        """The health status of the server ("" service), None when it does not answer."""
        with grpc.insecure_channel(self.target) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return None
            return int(answer.status)

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log()[-4000:]}")
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server not SERVING after {timeout} s:\n{self.log()[-4000:]}")

    def wait_health(self, status: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == status:
                return True
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL the server (by PID) and reap it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        if process is not None:
            process.wait(STOP_TIMEOUT)

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

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kib(self) -> int:
        """Resident memory of the server process (VmRSS, KiB)."""
        return _status_field(self.pid, "VmRSS")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


S = TypeVar("S", bound=Server)


@contextlib.contextmanager
def served(server: S) -> Iterator[S]:
    """Run a server for a fixture: started, and on exit stopped cleanly with no traceback logged."""
    running = server.start()
    yield running
    status = running.stop()
    assert status == 0, f"server did not shut down cleanly ({status}):\n{running.log()[-4000:]}"
    assert "Traceback" not in running.log(), running.log()[-4000:]


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0
