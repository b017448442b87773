"""The commands as a user runs them, beside a real server: ingest, export while serving, recluster.

Records go in through a running ``idlink serve`` (gRPC, loopback). While it
serves, ``idlink export-records`` reads the store as a second process, and
``idlink recluster`` (subprocesses both) computes the generation. Every
contact's customer in the generation is the one the server resolves it to,
and the manifest's change sequence number is the server's last change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from idlink.client import IdlinkClient
from idlink.v1 import admin_pb2, common_pb2, identity_pb2
from tests.server import Server, make_token

ACCOUNT = "centre"


def run_idlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlink", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def crm_rows() -> list[tuple[str, list[tuple[str, str]]]]:
    """CRM-like rows: households sharing a phone, a placeholder email on many rows."""
    rows = []
    for i in range(40):
        contacts = [("phone", f"+4420794601{i // 2:02d}"), ("email", f"person{i}@mail.example")]
        if i % 5 == 0:
            contacts.append(("email", "no@email.com"))
        rows.append((f"row-{i}", contacts))
    return rows


@pytest.fixture
def server(tmp_path: Path):
    running = Server(tmp_path / "data").start()
    yield running
    running.stop()


def test_export_while_serving_and_recluster_agree_with_the_server(server: Server, tmp_path: Path):
    token = make_token(server.data, ACCOUNT)
    with IdlinkClient(server.target, token, timeout=10.0) as client:
        client.admin.SetAccountPolicy(
            admin_pb2.SetAccountPolicyRequest(
                account=ACCOUNT,
                policy=common_pb2.AccountPolicy(max_contacts=6, isolate_min_connections=3),
            ),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )
        records = [
            identity_pb2.Record(
                source="crm",
                record_id=rid,
                contacts=[common_pb2.ContactKey(type=t, value=v) for t, v in contacts],
            )
            for rid, contacts in crm_rows()
        ]
        client.ingest(ACCOUNT, records, batch_size=16)

        export = tmp_path / "export"
        done = run_idlink(
            "export-records", "--data", str(server.data), "--account", ACCOUNT, "--out", str(export)
        )
        assert done.returncode == 0, done.stderr
        assert "40 records" in done.stdout
        generation = tmp_path / "generation"
        done = run_idlink(
            "recluster", "--engine", "local", "--in", str(export), "--out", str(generation)
        )
        assert done.returncode == 0, done.stderr
        assert " 0 created" in done.stdout and " 0 merged" in done.stdout, done.stdout

        customer_of = {
            row["contact_pid"]: row["customer_pid"]
            for row in pq.read_table(generation / "contacts.parquet").to_pylist()
        }
        seen = set()
        for _, contacts in crm_rows():
            for type_, value in contacts:
                answer = client.resolve(ACCOUNT, type_, value)
                pid = uuid.UUID(answer.contact_pid).bytes
                customer = uuid.UUID(answer.customer.customer_pid).bytes
                assert customer_of[pid] == customer, (type_, value)
                seen.add(pid)
        assert seen == set(customer_of)
        # The placeholder is isolated by the cap, in the store and in the generation.
        placeholder = client.resolve(ACCOUNT, "email", "no@email.com")
        isolated = {
            row["contact_pid"]
            for row in pq.read_table(generation / "contacts.parquet").to_pylist()
            if row["isolated"]
        }
        assert isolated == {uuid.UUID(placeholder.contact_pid).bytes}
        # The manifest names the change feed's position at export: one more change moves it.
        first = json.loads((export / "manifest.json").read_text())["change_seq"]
        client.link(ACCOUNT, "crm", "late", [("email", "late@mail.example")])
        again = tmp_path / "again"
        done = run_idlink(
            "export-records", "--data", str(server.data), "--account", ACCOUNT, "--out", str(again)
        )
        assert done.returncode == 0, done.stderr
        assert json.loads((again / "manifest.json").read_text())["change_seq"] == first + 1
    assert first > 0
    assert server.alive()
