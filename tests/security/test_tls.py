"""TLS and mutual TLS with certificates made here (SPEC 8)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idlink.security.apikeys import create_key
from idlink.v1 import identity_pb2, identity_pb2_grpc
from tests.server import free_port
from tests.service.conftest import key

from .conftest import auth


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Authority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common: str, *, server: bool) -> tuple[bytes, bytes]:
        private = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(private)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, stranger = Authority("idlink test CA"), Authority("another CA")
    files = {"ca": ca.pem, "stranger_ca": stranger.pem}
    files["server_cert"], files["server_key"] = ca.issue("localhost", server=True)
    files["client_cert"], files["client_key"] = ca.issue("agent-desktop", server=False)
    files["rogue_cert"], files["rogue_key"] = stranger.issue("rogue", server=False)
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return files, paths


def start(data: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log_path = data.parent / f"{data.name}-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idlink.service.server",
                "--data",
                str(data),
                "--listen",
                f"127.0.0.1:{port}",
                "--grace",
                "2",
                *args,
            ],
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text())
        with __import__("socket").socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not listen")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def healthy(channel: grpc.Channel) -> bool:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_serves_a_client_that_trusts_the_ca(tmp_path, pki):
    files, paths = pki
    process, port = start(
        tmp_path / "data",
        "--tls-cert",
        str(paths["server_cert"]),
        "--tls-key",
        str(paths["server_key"]),
    )
    try:
        token = create_key(tmp_path / "data", "tls", "reader")
        credentials = grpc.ssl_channel_credentials(root_certificates=files["ca"])
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            assert healthy(channel)
            answer = identity_pb2_grpc.IdentityServiceStub(channel).Resolve(
                identity_pb2.ResolveRequest(account="tls", contact=key("email", "a@x.com")),
                metadata=auth(token),
                timeout=5,
            )
            assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain, pytest.raises(grpc.RpcError):
            healthy(plain)
    finally:
        stop(process)


def test_mutual_tls_refuses_clients_without_a_certificate_of_its_ca(tmp_path, pki):
    files, paths = pki
    process, port = start(
        tmp_path / "data",
        "--tls-cert",
        str(paths["server_cert"]),
        "--tls-key",
        str(paths["server_key"]),
        "--tls-client-ca",
        str(paths["ca"]),
    )
    target = f"localhost:{port}"
    try:
        good = grpc.ssl_channel_credentials(files["ca"], files["client_key"], files["client_cert"])
        with grpc.secure_channel(target, good) as channel:
            assert healthy(channel)
        for credentials in (
            grpc.ssl_channel_credentials(root_certificates=files["ca"]),
            grpc.ssl_channel_credentials(files["ca"], files["rogue_key"], files["rogue_cert"]),
        ):
            with grpc.secure_channel(target, credentials) as channel:
                with pytest.raises(grpc.RpcError) as caught:
                    healthy(channel)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop(process)


def test_plaintext_off_loopback_is_refused_at_start_but_tls_may_listen_anywhere(tmp_path, pki):
    _, paths = pki
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "idlink.service.server",
            "--data",
            str(tmp_path / "a"),
            "--listen",
            f"0.0.0.0:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "loopback" in refused.stderr
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idlink.service.server",
            "--data",
            str(tmp_path / "b"),
            "--listen",
            f"0.0.0.0:{free_port()}",
            "--tls-cert",
            str(paths["server_cert"]),
            "--tls-key",
            str(paths["server_key"]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        assert process.poll() is None
    finally:
        stop(process)
