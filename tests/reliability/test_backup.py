"""Backup and restore, and the offline check (SPEC 9).

``idlink backup`` copies a store while a server writes to it; a server
started on the copy serves it and the copy passes ``idlink check``.
``idlink check`` finds a damaged store and exits with status 1.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc

from tests.reliability.harness import (
    Client,
    batch_records,
    configure_account,
    ingest_request,
    missing_records,
    offline_engine,
    store_problems,
)
from tests.server import Server, make_token

ACCOUNT = "backup"


def idlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlink", *args], capture_output=True, text=True, timeout=120
    )


def test_backup_under_writes_restores_to_a_store_that_passes_the_check(tmp_path):
    data = tmp_path / "data"
    copy = tmp_path / "copy"
    token = make_token(data, ACCOUNT)
    server = Server(data).start()
    stop = threading.Event()
    acked: list[int] = []

    def write() -> None:
        with Client(server.target, token) as client:
            seq = 1
            while not stop.is_set() and seq < 500:
                request = ingest_request(ACCOUNT, seq, batch_records(21, seq, 100))
                try:
                    for ack in client.identity.Ingest(
                        iter([request]), metadata=client.metadata, timeout=60
                    ):
                        acked.append(ack.committed_seq)
                except grpc.RpcError:
                    return
                seq += 1

    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        while len(acked) < 10:
            writer.join(0.05)
            assert writer.is_alive()
        done = idlink("backup", "--data", str(data), str(copy))
        stop.set()
        writer.join(60)
        assert done.returncode == 0, done.stderr
        assert len(acked) > 10
    finally:
        stop.set()
        assert server.stop() == 0
    assert (copy / "master.key").exists()

    checked = idlink("check", "--data", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "store ok" in checked.stdout

    # The copy is a snapshot of one moment: some prefix of the batches, each whole.
    with offline_engine(copy) as engine:
        counts = [
            len(missing_records(engine, ACCOUNT, batch_records(21, seq, 100)))
            for seq in range(1, max(acked) + 1)
        ]
    assert set(counts) <= {0, 100}
    assert counts[0] == 0

    restored = Server(copy).start()
    try:
        assert restored.alive()
        with Client(restored.target, token) as client:
            seq = max(acked) + 1
            acks = list(
                client.identity.Ingest(
                    iter([ingest_request(ACCOUNT, seq, batch_records(21, seq, 100))]),
                    metadata=client.metadata,
                    timeout=60,
                )
            )
            assert acks[-1].committed_seq == seq
    finally:
        assert restored.stop() == 0
    assert store_problems(copy) == []


def test_check_reports_a_damaged_store(tmp_path: Path):
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data).start()
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
            for seq in range(1, 4):
                list(
                    client.identity.Ingest(
                        iter([ingest_request(ACCOUNT, seq, batch_records(22, seq, 100))]),
                        metadata=client.metadata,
                        timeout=60,
                    )
                )
    finally:
        assert server.stop() == 0
    assert idlink("check", "--data", str(data)).returncode == 0

    # Take one contact out of its customer, as a torn write would.
    with offline_engine(data) as engine:

        def damage(txn) -> None:
            scoped = txn.account(txn.account_id(ACCOUNT))
            for pid, customer in scoped.iter_customers():
                if len(customer.contact_pids) > 1:
                    del customer.contact_pids[0]
                    scoped.put_customer(pid, customer)
                    return

        engine.store.write(damage)  # type: ignore[attr-defined]

    checked = idlink("check", "--data", str(data))
    assert checked.returncode == 1
    assert "does not hold it" in checked.stdout
    assert "partition differs" in checked.stdout
    assert idlink("check", "--data", str(tmp_path / "nothing")).returncode == 2
