"""The gateway calls unary RPCs in process, behind the server's own interceptors.

No gRPC hop: the call log names the HTTP caller as the peer (an RPC that came
over the private channel would name its Unix socket), and refusals, shedding
and errors are the server's own. ``create_server`` builds such a server in
the test's own process, on port 0.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idlink.service.app import ServerConfig, create_server
from tests.http.conftest import details_of
from tests.server import free_port


def call_lines(log: str, method: str) -> list[dict]:
    lines = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "call" and entry.get("method") == method:
            lines.append(entry)
    return lines


def test_a_unary_http_call_is_served_in_process_with_the_http_peer(http_server, tokens, account):
    pid = str(uuid.uuid4())
    answer = http_server.request(
        "GET", f"/v1/accounts/{account}/customers/{pid}", token=tokens["admin"]
    )
    assert answer.status == 404
    (info,) = details_of(answer.json, "ErrorInfo")
    assert info["reason"] == "NOT_FOUND"
    # Failed calls are logged with their peer by the server's call interceptor.
    seen = []
    for _ in range(50):
        seen = call_lines(http_server.log(), "/idlink.v1.ProfileService/GetCustomer")
        if any(e.get("code") == "NOT_FOUND" for e in seen):
            break
        time.sleep(0.1)
    failed = [e for e in seen if e.get("code") == "NOT_FOUND"]
    assert failed, seen
    assert all(e["peer"].startswith("http:") for e in failed)


def test_create_server_serves_grpc_and_http_in_this_process(tmp_path):
    http_port = free_port()

    async def run() -> tuple[int, dict, str]:
        config = ServerConfig(
            tmp_path / "data",
            "127.0.0.1:0",
            http_listen=f"127.0.0.1:{http_port}",
            health_interval=0,
            retention_interval=0,
            grace=1,
        )
        server, port = await create_server(config)
        try:
            await server.start()
            assert port and server.http_port == http_port

            def outside() -> tuple[int, dict, str]:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    serving = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
                try:
                    connection.request("GET", "/v1/accounts/a/keyTypes")
                    response = connection.getresponse()
                    return response.status, json.loads(response.read()), serving.status
                finally:
                    connection.close()

            status, body, serving = await asyncio.get_running_loop().run_in_executor(None, outside)
            await server.shutdown()
            return status, body, serving
        finally:
            await server.close()

    status, body, serving = asyncio.run(run())
    assert serving == health_pb2.HealthCheckResponse.SERVING
    assert status == 401  # no key: refused by the server's admission, in process
    (info,) = details_of(body, "ErrorInfo")
    assert info["reason"] == "API_KEY_MISSING"
