"""The server itself: health, reflection, load shedding, loopback-only plaintext (SPEC 8, 9)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from idlink.v1 import profile_pb2
from tests.server import free_port

from .conftest import Client, ServerProcess


def test_health_reports_serving_for_the_server_and_each_service(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in (
            "",
            "idlink.v1.IdentityService",
            "idlink.v1.ProfileService",
            "idlink.v1.AdminService",
        ):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in answer.list_services_response.service}
    assert {
        "idlink.v1.IdentityService",
        "idlink.v1.ProfileService",
        "idlink.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names


def test_reflection_gives_the_api_descriptors(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="idlink.v1.IdentityService"
        )
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert answer.file_descriptor_response.file_descriptor_proto


def test_calls_beyond_the_limit_are_shed_with_resource_exhausted(tmp_path, account):
    limited = ServerProcess(tmp_path / "data", "--max-streams", "1").start()
    client = Client(limited.target)
    try:
        # The first stream holds the only slot: it waits for changes.
        first = client.profile.WatchChanges(profile_pb2.WatchChangesRequest(account=account))
        ended: list[grpc.StatusCode] = []

        def drain() -> None:
            try:
                list(first)
            except grpc.RpcError as exc:
                ended.append(exc.code())

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(0.5)
        second = client.profile.WatchChanges(profile_pb2.WatchChangesRequest(account=account))
        with pytest.raises(grpc.RpcError) as caught:
            next(second)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "busy" in caught.value.details()
        first.cancel()
        reader.join(5)
        assert ended == [grpc.StatusCode.CANCELLED]
        # The slot is free again (once the server has seen the cancellation).
        for _ in range(20):
            third = client.profile.WatchChanges(
                profile_pb2.WatchChangesRequest(account=account), timeout=1
            )
            with pytest.raises(grpc.RpcError) as caught:
                next(third)
            if caught.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
            time.sleep(0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        client.close()
        assert limited.stop() == 0


def test_plaintext_is_refused_off_loopback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "idlink.service.server",
            "--data",
            str(tmp_path / "data"),
            "--listen",
            f"0.0.0.0:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert "Traceback" not in result.stderr


def test_several_worker_processes_share_one_store(tmp_path, account):
    from idlink.v1 import common_pb2, identity_pb2

    workers = ServerProcess(tmp_path / "data", "--workers", "2").start()
    try:
        contacts = [common_pb2.ContactKey(type="email", value=f"w{i}@x.com") for i in range(8)]
        for contact in contacts:  # a new connection each time: either process may answer
            client = Client(workers.target)
            try:
                client.identity.Resolve(
                    identity_pb2.ResolveRequest(
                        account=account, contact=contact, create_if_missing=True
                    )
                )
            finally:
                client.close()
        for contact in contacts:
            client = Client(workers.target)
            try:
                answer = client.identity.Resolve(
                    identity_pb2.ResolveRequest(account=account, contact=contact)
                )
                assert answer.status == identity_pb2.RESOLVE_STATUS_FOUND
            finally:
                client.close()
        client = Client(workers.target)
        try:
            call = client.profile.WatchChanges(
                profile_pb2.WatchChangesRequest(account=account), timeout=3
            )
            seqs = []
            with pytest.raises(grpc.RpcError):
                for response in call:
                    seqs.extend(e.seq for e in response.events)
            assert seqs == list(range(1, 9))
        finally:
            client.close()
    finally:
        assert workers.stop() == 0
    assert workers.log().count('"msg": "serving"') == 2


def test_metrics_count_calls_ingested_records_and_store_size(tmp_path, account):
    import urllib.request

    from idlink.v1 import common_pb2, identity_pb2

    port = free_port()
    running = ServerProcess(tmp_path / "data", "--metrics-port", str(port)).start()
    try:
        client = Client(running.target)
        try:
            record = identity_pb2.Record(
                source="crm",
                record_id="1",
                contacts=[common_pb2.ContactKey(type="email", value="m@x.com")],
            )
            acks = list(
                client.identity.Ingest(
                    iter([identity_pb2.IngestRequest(account=account, seq=1, records=[record])])
                )
            )
            assert acks[-1].committed_seq == 1
            client.identity.Resolve(
                identity_pb2.ResolveRequest(
                    account=account, contact=common_pb2.ContactKey(type="email", value="m@x.com")
                )
            )
        finally:
            client.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        assert (
            'idlink_calls_total{code="OK",method="/idlink.v1.IdentityService/Resolve"} 1.0' in text
        )
        assert "idlink_ingested_records_total 1.0" in text
        assert (
            'idlink_call_seconds_bucket{le="+Inf",method="/idlink.v1.IdentityService/Resolve"}'
            in text
        )
        used = [line for line in text.splitlines() if line.startswith("idlink_store_used_bytes ")]
        assert used and float(used[0].split()[1]) > 0
    finally:
        assert running.stop() == 0
