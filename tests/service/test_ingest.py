"""Streaming ingest through a real server: acknowledgements only after commit (SPEC 9, 10)."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import common_pb2, identity_pb2
from tests.helpers import resolve
from tests.service.conftest import key

from .conftest import error_details

RECORDS = 50_000
BATCH = 1000
BASE = 1_700_000_000


def crm_record(i: int) -> identity_pb2.Record:
    """Row i of a CRM export: a phone, an email shared by two rows, sometimes a CRM id."""
    contacts = [
        key("phone", f"+1 415 {i // 10000:03d} {i % 10000:04d}"),
        key("email", f"c{i // 2}@shop.com"),
    ]
    if i % 3 == 0:
        contacts.append(key("id", f"CRM-{i}", "salesforce"))
    return identity_pb2.Record(
        source="crm", record_id=str(i), contacts=contacts, observed_at=Timestamp(seconds=BASE + i)
    )


def batches(account: str, records: int, size: int):
    for seq, start in enumerate(range(0, records, size), start=1):
        yield identity_pb2.IngestRequest(
            account=account,
            seq=seq,
            records=[crm_record(i) for i in range(start, min(start + size, records))],
        )


@pytest.mark.slow
def test_fifty_thousand_records_are_acknowledged_after_commit(client, account):
    started = time.monotonic()
    acks = list(client.identity.Ingest(batches(account, RECORDS, BATCH), timeout=240))
    elapsed = time.monotonic() - started
    seqs = [a.committed_seq for a in acks]
    assert seqs == sorted(set(seqs)), "acknowledgements must increase"
    assert seqs[-1] == RECORDS // BATCH
    assert sum(a.records for a in acks) == RECORDS
    assert not [r for a in acks for r in a.refused]
    # Every acknowledged record is there: rows 2k and 2k+1 share an email.
    for i in (0, 1, 24_998, 49_999):
        answer = resolve(client, account, key("email", f"c{i // 2}@shop.com"))
        assert answer.status == identity_pb2.RESOLVE_STATUS_FOUND
        values = {c.value for c in answer.customer.contacts}
        assert f"+1415{i // 10000:03d}{i % 10000:04d}" in values
    pair = resolve(client, account, key("phone", "+1 415 000 0003")).customer
    assert {c.value for c in pair.contacts} == {
        "+14150000002",
        "+14150000003",
        "c1@shop.com",
        "CRM-3",
    }
    print(f"ingested {RECORDS} records in {elapsed:.1f} s ({RECORDS / elapsed:.0f}/s)")


def test_seq_must_increase_within_a_stream(client, account):
    requests = [
        identity_pb2.IngestRequest(account=account, seq=1, records=[crm_record(1)]),
        identity_pb2.IngestRequest(account=account, seq=1, records=[crm_record(2)]),
    ]
    call = client.identity.Ingest(iter(requests))
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["idlink-error-field"] == "seq"
    assert details["idlink-error-reason"] == "SEQ_NOT_INCREASING"
    assert resolve(client, account, key("email", "c0@shop.com")).status == (
        identity_pb2.RESOLVE_STATUS_FOUND
    )


def test_a_bad_record_fails_its_batch_whole_and_earlier_batches_stay(client, account):
    good = identity_pb2.IngestRequest(account=account, seq=1, records=[crm_record(10)])
    bad = identity_pb2.IngestRequest(
        account=account,
        seq=2,
        records=[
            crm_record(20),
            identity_pb2.Record(source="crm", record_id="x", contacts=[key("fax", "1")]),
        ],
    )
    acks = []
    with pytest.raises(grpc.RpcError) as caught:
        for ack in client.identity.Ingest(iter([good, bad])):
            acks.append(ack.committed_seq)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch seq 2" in caught.value.details()
    assert "Traceback" not in caught.value.details()
    assert error_details(caught.value)["idlink-error-field"] == "records[1].contacts[0].type"
    assert acks in ([], [1])
    assert resolve(client, account, key("email", "c5@shop.com")).status == (
        identity_pb2.RESOLVE_STATUS_FOUND
    )
    # Nothing of the failed batch was written, not even its good record.
    assert resolve(client, account, key("email", "c10@shop.com")).status == (
        identity_pb2.RESOLVE_STATUS_NOT_FOUND
    )


def test_ingest_deletes_and_refused_records_are_reported(client, account):
    from idlink.v1 import admin_pb2

    client.admin.PutKeyType(
        admin_pb2.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(name="crm_id", max_per_customer=1),
        )
    )
    stream = [
        identity_pb2.IngestRequest(
            account=account,
            seq=5,
            records=[
                identity_pb2.Record(
                    source="s",
                    record_id="a",
                    contacts=[key("crm_id", "1"), key("email", "z@x.com")],
                    observed_at=Timestamp(seconds=BASE + 1),
                ),
                identity_pb2.Record(
                    source="s",
                    record_id="b",
                    contacts=[key("crm_id", "2"), key("email", "z@x.com")],
                    observed_at=Timestamp(seconds=BASE + 10),
                ),
            ],
        ),
        identity_pb2.IngestRequest(
            account=account,
            seq=9,
            records=[identity_pb2.Record(source="s", record_id="a", deleted=True)],
        ),
    ]
    acks = list(client.identity.Ingest(iter(stream)))
    assert acks[-1].committed_seq == 9
    refused = [r for a in acks for r in a.refused]
    assert [(r.seq, r.record_id, r.outcome) for r in refused] == [
        (5, "b", common_pb2.RECORD_OUTCOME_CONFLICT)
    ]
    # Record a deleted: crm_id 2 and the email are one customer now.
    answer = resolve(client, account, key("crm_id", "2"))
    assert {c.value for c in answer.customer.contacts} == {"2", "z@x.com"}
