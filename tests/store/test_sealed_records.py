"""Record ids and labels never reach the disk in clear; canonical order stays exact (SPEC 3.2, 8).

On disk a record is keyed by a keyed hash of (source, record id) and sealed
whole; the contact -> record index holds (observed_at, that hash). The
domain still gets canonical keys, sorted by the real record id.
"""

from __future__ import annotations

import pytest

from idlink.errors import StoreError
from idlink.security.crypto import open_store
from idlink.store import codec
from idlink.store.env import Store
from idlink.store.txn import CustomerState, RecordState

ACCOUNT_ID = 7
PID = b"P" * 16
# Equal times and sources, so only the record id orders them; some are prefixes of others.
RECORD_IDS = ["+447700900123", "b", "a", "ab", "a b", "10", "9", "1", "é", "a\u00a0"]


def raw_items(store: Store, db: str) -> list[tuple[bytes, bytes]]:
    with store._env.begin() as raw:
        return [(bytes(k), bytes(v)) for k, v in raw.cursor(db=store._dbs[db])]


def put_records(store: Store, record_ids: list[str], observed_at_us: int = 5) -> None:
    def write(txn) -> None:
        for record_id in record_ids:
            record = RecordState(
                source="crm", record_id=record_id, observed_at_us=observed_at_us, contact_pids=[PID]
            )
            txn.account(ACCOUNT_ID).put_record(record)
            canonical = codec.canonical_key(observed_at_us, "crm", record_id)
            txn.account(ACCOUNT_ID).index_record(PID, canonical)

    store.write(write)


def test_a_contacts_records_come_back_in_exact_canonical_order(tmp_path):
    with open_store(tmp_path, durable=False) as store:
        put_records(store, RECORD_IDS[:5], observed_at_us=5)
        put_records(store, RECORD_IDS[5:], observed_at_us=4)
        with store.read() as txn:
            keys = txn.account(ACCOUNT_ID).record_keys_of(PID)
            records = [txn.account(ACCOUNT_ID).get_record_by_canonical(k) for k in keys]
    expected = sorted(
        [(5, "crm", r) for r in RECORD_IDS[:5]] + [(4, "crm", r) for r in RECORD_IDS[5:]]
    )
    assert [codec.split_canonical_key(k) for k in keys] == expected
    assert [(r.observed_at_us, r.source, r.record_id) for r in records] == expected


def test_no_record_id_is_on_disk_in_clear(tmp_path):
    with open_store(tmp_path, durable=False) as store:
        put_records(store, RECORD_IDS[:1])
        items = raw_items(store, "records") + raw_items(store, "contact_records")
        with store.read() as txn:
            assert (
                txn.account(ACCOUNT_ID).get_record("crm", "+447700900123").record_id
                == "+447700900123"
            )
    assert len(items) == 2
    for key, value in items:
        for needle in (b"+447700900123", b"447700900123", b"7700900123", b"crm"):
            assert needle not in key and needle not in value
    (record_key, _), (_, ref) = items
    assert len(record_key) == 4 + codec.RECORD_HASH_BYTES
    assert ref == codec.time_key(5) + record_key[4:]


def test_labels_are_sealed_with_the_rest_of_the_customer(tmp_path):
    customer = CustomerState(contact_pids=[PID])
    customer.profile.labels.extend(["VIP-gold-7731", "debtor:high-priority"])
    with open_store(tmp_path, durable=False) as store:
        store.write(lambda txn: txn.account(ACCOUNT_ID).put_customer(b"C" * 16, customer))
        [(_, value)] = raw_items(store, "customers")
        with store.read() as txn:
            assert list(txn.account(ACCOUNT_ID).get_customer(b"C" * 16).profile.labels) == [
                "VIP-gold-7731",
                "debtor:high-priority",
            ]
    assert b"VIP-gold-7731" not in value and b"debtor" not in value


def test_a_sealed_record_moved_under_another_key_does_not_open(tmp_path):
    with open_store(tmp_path, durable=False) as store:
        put_records(store, ["r1", "r2"])
        (key_1, value_1), (key_2, _) = raw_items(store, "records")
        with store._env.begin(write=True) as raw:
            raw.put(key_2, value_1, db=store._dbs["records"])
        with store.read() as txn, pytest.raises(StoreError):
            for record_id in ("r1", "r2"):
                txn.account(ACCOUNT_ID).get_record("crm", record_id)


def test_an_index_entry_whose_record_is_missing_finds_nothing_and_can_be_removed(tmp_path):
    with open_store(tmp_path, durable=False) as store:
        put_records(store, ["kept"])
        gone = codec.canonical_key(3, "crm", "gone")
        store.write(lambda txn: txn.account(ACCOUNT_ID).index_record(PID, gone))
        with store.read() as txn:
            keys = txn.account(ACCOUNT_ID).record_keys_of(PID)
            assert len(keys) == 2
            missing = keys[0]  # observed_at 3 sorts first
            assert codec.split_canonical_key(missing)[1] == codec.MISSING_SOURCE
            assert txn.account(ACCOUNT_ID).get_record_by_canonical(missing) is None
            assert txn.account(ACCOUNT_ID).get_record_by_canonical(keys[1]).record_id == "kept"
        store.write(lambda txn: txn.account(ACCOUNT_ID).unindex_record(PID, missing))
        with store.read() as txn:
            assert txn.account(ACCOUNT_ID).record_keys_of(PID) == [
                codec.canonical_key(5, "crm", "kept")
            ]


def test_a_record_replaced_or_deleted_in_one_transaction_is_read_back_as_written(tmp_path):
    # Records opened in a transaction are kept for it; writes must go through.
    with open_store(tmp_path, durable=False) as store:
        put_records(store, ["r1"])

        def change(txn) -> None:
            record = txn.account(ACCOUNT_ID).get_record("crm", "r1")
            record.outcome = 2
            txn.account(ACCOUNT_ID).put_record(record)
            assert txn.account(ACCOUNT_ID).get_record("crm", "r1").outcome == 2
            txn.account(ACCOUNT_ID).delete_record("crm", "r1")
            assert txn.account(ACCOUNT_ID).get_record("crm", "r1") is None

        store.write(change)
        with store.read() as txn:
            assert txn.account(ACCOUNT_ID).get_record("crm", "r1") is None
