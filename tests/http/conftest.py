"""A real idlink server with the HTTP gateway on, and a small HTTP client for it.

``idlink serve --http-listen 127.0.0.1:PORT`` in a subprocess (``tests/server.py``);
every request goes over a real loopback socket.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idlink.security.apikeys import create_key
from tests.server import Server, free_port

ROLES = ("reader", "writer", "agent", "admin")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


class HttpServer(Server):
    """``idlink serve`` with ``--http-listen`` on a free loopback port."""

    def __init__(self, data: Path, *extra_args: str) -> None:
        self.http_port = free_port()
        super().__init__(
            data, "--grace", "5", "--http-listen", f"127.0.0.1:{self.http_port}", *extra_args
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str = "",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        """One HTTP request; ``body`` is sent as JSON, ``raw`` as it is."""
        sent = dict(headers or {})
        if token:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return Answer(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    running = HttpServer(tmp_path_factory.mktemp("http") / "data").start()
    yield running
    status = running.stop()
    assert status == 0, f"server did not stop cleanly ({status}):\n{running.log()[-4000:]}"
    assert "Traceback" not in running.log(), running.log()[-4000:]


@pytest.fixture
def account() -> str:
    return f"http-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tokens(http_server: HttpServer, account: str) -> dict[str, str]:
    """A key of every role for the test's account."""
    return {role: create_key(http_server.data, account, role) for role in ROLES}


def contact(type_: str, value: str, source: str = "") -> dict[str, str]:
    out = {"type": type_, "value": value}
    if source:
        out["source"] = source
    return out


def details_of(status: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The details of a google.rpc.Status JSON of one type (ErrorInfo, BadRequest, ...)."""
    suffix = "/google.rpc." + kind
    return [d for d in status.get("details", []) if d.get("@type", "").endswith(suffix)]
