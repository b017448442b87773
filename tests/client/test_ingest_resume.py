"""Ingest survives a server crash: kill -9 mid-stream, restart, every record is there (SPEC 9)."""

from __future__ import annotations

import threading

from google.protobuf.timestamp_pb2 import Timestamp

from idlink.client import IdlinkClient
from idlink.v1 import common_pb2, identity_pb2
from tests.server import make_token

from .conftest import restartable_server

RECORDS = 12_000
BATCH = 200
KILL_AFTER_SEQ = 10
# Rows share an email in groups, so checking every record reads few customers
# (a key that reads too many distinct customers is throttled, SPEC 8).
GROUP = 30
BASE = 1_700_000_000


def phone(i: int) -> str:
    return f"+1415{i // 10000:03d}{i % 10000:04d}"


def record(i: int) -> identity_pb2.Record:
    """Row i: its own phone, and the email of its group."""
    return identity_pb2.Record(
        source="crm",
        record_id=str(i),
        contacts=[
            common_pb2.ContactKey(type="phone", value=phone(i)),
            common_pb2.ContactKey(type="email", value=f"g{i // GROUP}@shop.com"),
        ],
        observed_at=Timestamp(seconds=BASE + i),
    )


def test_ingest_resumes_after_the_server_is_killed(tmp_path):
    account = "resume"
    server = restartable_server(tmp_path / "data")
    token = make_token(server.data, account)
    server.start()
    restarted = threading.Event()
    crash: list[BaseException] = []

    def crash_and_restart() -> None:
        try:
            server.kill()
            server.start()
        except BaseException as exc:  # reported by the test below
            crash.append(exc)
        finally:
            restarted.set()

    acks: list[identity_pb2.IngestAck] = []
    after_restart: list[identity_pb2.IngestAck] = []
    killer = threading.Thread(target=crash_and_restart, daemon=True)

    def on_ack(ack: identity_pb2.IngestAck) -> None:
        acks.append(ack)
        if restarted.is_set():
            after_restart.append(ack)
        if ack.committed_seq >= KILL_AFTER_SEQ and not killer.is_alive() and not restarted.is_set():
            killer.start()

    try:
        with IdlinkClient(server.target, token, timeout=5.0) as client:
            last = client.ingest(
                account,
                (record(i) for i in range(RECORDS)),
                BATCH,
                on_ack=on_ack,
                reconnect_timeout=60.0,
                max_in_flight=4,
            )
            assert restarted.wait(60)
            assert not crash, crash
            assert last == RECORDS // BATCH
            seqs = [a.committed_seq for a in acks]
            assert seqs[-1] == RECORDS // BATCH
            assert after_restart, "the ingest ended before the server was killed"
            assert after_restart[0].committed_seq < RECORDS // BATCH

            # Every record is there: each group's customer holds the phones of all its rows.
            groups = range(RECORDS // GROUP)
            answers = client.batch_resolve(account, [("email", f"g{g}@shop.com") for g in groups])
            missing = []
            for g, answer in zip(groups, answers, strict=True):
                held = {c.value for c in answer.customer.contacts if c.type == "phone"}
                rows = range(g * GROUP, (g + 1) * GROUP)
                missing += [i for i in rows if phone(i) not in held]
            assert not missing, f"{len(missing)} records missing, first {missing[:5]}"
    finally:
        server.stop()
