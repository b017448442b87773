"""Resource exhaustion (SPEC 9): a full map, dead readers, a full disk; and health.

- A single-process server whose LMDB map fills grows the map and carries on.
- With ``--workers 2`` growing is unsafe, so a full map is ``RESOURCE_EXHAUSTED``
  and the refused batch is not written at all.
- Reader slots of a process killed inside a read transaction are cleared by
  ``reader_check``.
- A full disk (a real tmpfs of a few MiB) fails the write with ``UNAVAILABLE``
  or ``RESOURCE_EXHAUSTED``, nothing of it is written, health turns
  NOT_SERVING; when the disk grows again the server reopens the store and
  turns SERVING.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from idlink.security.crypto import open_store
from idlink.v1 import common_pb2, identity_pb2
from tests.reliability.harness import (
    Client,
    batch_records,
    configure_account,
    ingest_request,
    missing_records,
    offline_engine,
    store_problems,
)
from tests.server import Server, free_port, make_token

ACCOUNT = "exhaustion"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def ingest_one(client: Client, seed: int, seq: int, size: int) -> str:
    """Send one batch in its own stream; the status name of the stream."""
    request = ingest_request(ACCOUNT, seq, batch_records(seed, seq, size))
    try:
        acks = list(client.identity.Ingest(iter([request]), metadata=client.metadata, timeout=60))
    except grpc.RpcError as exc:
        assert "Traceback" not in (exc.details() or "")  # type: ignore[attr-defined]
        return exc.code().name  # type: ignore[attr-defined]
    assert acks and acks[-1].committed_seq == seq
    return "OK"


def absent(data: Path, seed: int, seq: int, size: int) -> bool:
    """True when no record of batch ``seq`` is in the store."""
    records = batch_records(seed, seq, size)
    with offline_engine(data) as engine:
        return len(missing_records(engine, ACCOUNT, records)) == len(records)


def present(data: Path, seed: int, seqs: range, size: int) -> list[str]:
    with offline_engine(data) as engine:
        return [
            m
            for seq in seqs
            for m in missing_records(engine, ACCOUNT, batch_records(seed, seq, size))
        ]


def test_single_process_server_grows_a_full_map_and_carries_on(tmp_path):
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data, "--map-size", str(2 << 20)).start()
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
            for seq in range(1, 41):
                assert ingest_one(client, 11, seq, 200) == "OK"
    finally:
        assert server.stop() == 0
    assert "store map grown" in server.log()
    assert present(data, 11, range(1, 41), 200) == []
    assert store_problems(data) == []


def test_full_map_with_workers_is_resource_exhausted_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data, "--workers", "2", "--map-size", str(2 << 20), port=free_port()).start()
    refused = None
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
            for seq in range(1, 200):
                status = ingest_one(client, 12, seq, 200)
                if status != "OK":
                    assert status == "RESOURCE_EXHAUSTED"
                    refused = seq
                    break
            assert refused is not None, "the map never filled"
            # Still serving: reads answer.
            found = client.identity.Resolve(
                identity_pb2.ResolveRequest(
                    account=ACCOUNT,
                    contact=common_pb2.ContactKey(
                        type="phone", value=batch_records(12, 1, 200)[0].contacts[0][1]
                    ),
                ),
                metadata=client.metadata,
                timeout=30,
            )
            assert found.status == identity_pb2.RESOLVE_STATUS_FOUND
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
    assert present(data, 12, range(1, refused), 200) == []
    assert absent(data, 12, refused, 200)
    assert store_problems(data) == []


_READER = """
import sys, time
from idlink.security.crypto import open_store
from idlink.v1 import common_pb2, identity_pb2
store = open_store(sys.argv[1], multi_process=True)
txn = store.read()
txn.__enter__()
print("reading", flush=True)
time.sleep(60)
"""


def test_reader_slots_of_a_killed_process_are_cleared(tmp_path):
    data = tmp_path / "data"
    with open_store(data, multi_process=True) as store:
        assert store.reader_check() == 0
        child = subprocess.Popen(
            [sys.executable, "-c", _READER, str(data)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "reading"
            before = store.stats()["readers"]
        finally:
            child.kill()  # SIGKILL: the slot is never released by its owner
            child.wait(20)
            if child.stdout is not None:
                child.stdout.close()
        assert before >= 1
        assert store.reader_check() >= 1
        assert store.reader_check() == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MiB tmpfs, grown later with a remount; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_cleanly_and_health_follows_the_store(small_disk):
    data = small_disk / "data"
    token = make_token(data, ACCOUNT)
    server = Server(
        data,
        "--health-interval",
        "0.2",
        "--min-free-disk",
        str(256 << 10),
        log_dir=small_disk.parent,  # the log must not fill the disk under test
    ).start()
    refused = None
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
            for seq in range(1, 400):
                status = ingest_one(client, 13, seq, 200)
                if status != "OK":
                    assert status in ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
                    refused = seq
                    break
            assert refused is not None, "the disk never filled"
            assert server.wait_health(NOT_SERVING, 10), "health did not turn NOT_SERVING"
            # Reads still answer while writes cannot.
            subprocess.run(
                ["mount", "-o", "remount,size=64m", str(small_disk)], check=True, timeout=30
            )
            assert server.wait_health(SERVING, 20), "health did not come back to SERVING"
            deadline = time.monotonic() + 20
            while ingest_one(client, 13, refused + 1, 200) != "OK":
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        assert server.stop() == 0
    # The audit flusher logs its failed writes with their traceback (security/audit.py).
    lines = [line for line in server.log().splitlines() if "audit flush failed" not in line]
    assert not [line for line in lines if "Traceback" in line]
    assert "store reopened" in server.log()
    assert present(data, 13, range(1, refused), 200) == []
    assert present(data, 13, range(refused + 1, refused + 2), 200) == []
    assert absent(data, 13, refused, 200)
    assert store_problems(data) == []
