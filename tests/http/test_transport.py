"""Plaintext HTTP only on loopback; --tls-cert/--tls-key (and --tls-client-ca) apply to HTTP."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys

from idlink.security.apikeys import create_key
from tests.security.test_tls import Authority
from tests.server import Server, free_port


def test_plaintext_http_off_loopback_is_refused(tmp_path):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "idlink",
            "serve",
            "--data",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--http-listen",
            f"0.0.0.0:{free_port()}",
        ],
        capture_output=True,
        timeout=60,
    )
    assert process.returncode == 2
    assert b"plaintext HTTP is only allowed on loopback" in process.stderr


def _tls_files(tmp_path):
    authority = Authority("idlink test CA")
    cert, key = authority.issue("localhost", server=True)
    client_cert, client_key = authority.issue("operator", server=False)
    paths = {}
    for name, data in {
        "ca.pem": authority.pem,
        "server.pem": cert,
        "server.key": key,
        "client.pem": client_cert,
        "client.key": client_key,
    }.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    return paths


def _https(port: int, context: ssl.SSLContext, token: str, account: str):
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        connection.request(
            "POST",
            f"/v1/accounts/{account}/contacts:resolve",
            body=json.dumps({"contact": {"type": "phone", "value": "+15551234567"}}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_tls_applies_to_http_and_mutual_tls_asks_for_a_client_certificate(tmp_path):
    files = _tls_files(tmp_path)
    http_port = free_port()
    server = Server(
        tmp_path / "data",
        "--tls-cert",
        files["server.pem"],
        "--tls-key",
        files["server.key"],
        "--tls-client-ca",
        files["ca.pem"],
        "--http-listen",
        f"127.0.0.1:{http_port}",
    )
    # The harness's health probe speaks plaintext gRPC; wait on HTTPS instead.
    server.start(wait=False)
    try:
        token = create_key(tmp_path / "data", "acme", "reader")
        context = ssl.create_default_context(cafile=files["ca.pem"])
        context.load_cert_chain(files["client.pem"], files["client.key"])
        status = _wait_https(http_port, context, token, server)
        assert status[0] == 200, status
        assert status[1]["status"] == "RESOLVE_STATUS_NOT_FOUND"
        # Without a client certificate the handshake fails.
        bare = ssl.create_default_context(cafile=files["ca.pem"])
        try:
            _https(http_port, bare, token, "acme")
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        else:
            raise AssertionError("HTTPS answered without a client certificate")
        # Plaintext HTTP on the TLS port gets no answer in the API's JSON.
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        try:
            plain.request("GET", "/openapi.json")
            assert plain.getresponse().status != 200
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
        finally:
            plain.close()
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def _wait_https(port, context, token, server, attempts: int = 300):
    last: object = None
    for _ in range(attempts):
        assert server.alive(), server.log()[-3000:]
        try:
            return _https(port, context, token, "acme")
        except (ConnectionError, OSError) as exc:
            last = exc
            import time

            time.sleep(0.1)
    raise AssertionError(f"HTTPS never answered: {last}\n{server.log()[-3000:]}")
