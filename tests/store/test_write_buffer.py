"""The write-back buffer of a write transaction (Txn.buffer_writes): same rows, fewer writes."""

from __future__ import annotations

import shutil

import pytest

from idlink.security.crypto import KEY_FILE, open_store
from idlink.store import codec
from idlink.store.serving import recorded
from idlink.store.txn import ContactState, CustomerState, RecordState


def _contact(value: str, first_seen: int) -> ContactState:
    return ContactState(type="email", value=value, first_seen=first_seen)


def _operations(txn, *, buffered: bool):
    """The same writes, buffered or not: rewrites, a delete, counters, a record, the log."""
    if buffered:
        txn.buffer_writes()
    account = txn.account(1)
    for i in range(30):
        pid = bytes([i]) * 16
        account.next_contact_seq()
        account.put_contact(pid, _contact(f"u{i}@example.com", i + 1))
        account.put_contact(pid, _contact(f"u{i}@example.com", i + 1))  # written again
        account.put_edge(pid, bytes([i + 1]) * 16)
    account.delete_contact(bytes([7]) * 16)
    account.put_customer(b"c" * 16, CustomerState(created_seq=account.next_customer_seq()))
    account.put_record(
        RecordState(source="crm", record_id="r1", observed_at_us=5, contact_pids=[b"\1" * 16])
    )
    account.index_record(b"\1" * 16, codec.canonical_key(5, "crm", "r1"))
    account.delete_record("crm", "r1")
    for _ in range(5):
        account.next_change_seq()
    if buffered:
        account.flush_writes()


def _dump(store) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every row of every sub-database, sealed values opened (their nonces differ by run)."""
    out = {}
    with store.read() as txn:
        for name in store._dbs:
            rows = []
            for key, value in txn._scan(name, b""):
                if name in ("contacts", "customers", "records"):
                    value = store.cipher.open(value, key)
                elif name == "record_log" and value[:1] in (b"c", b"p", b"e"):
                    value = value[:1] + store.cipher.open(value[1:], key)
                elif name == "record_log" and value[:1] == b"d":
                    n = 1 + codec.RECORD_HASH_BYTES
                    value = value[:n] + store.cipher.open(value[n:], key)
                rows.append((key, value))
            out[name] = rows
    out.pop("meta")  # the data version and the format stamp
    return out


def test_buffered_writes_leave_the_rows_unbuffered_writes_leave(tmp_path):
    with open_store(tmp_path / "plain", durable=False) as plain:
        plain.write(lambda txn: _operations(txn, buffered=False))
        expected = _dump(plain)
        with plain.read() as txn:
            counters = txn.account(1).counters()
    # The same data keys, so that keyed hashes (record keys) are the same.
    (tmp_path / "buffered").mkdir(mode=0o700)
    shutil.copy(tmp_path / "plain" / KEY_FILE, tmp_path / "buffered" / KEY_FILE)
    with open_store(tmp_path / "buffered", durable=False) as buffered:
        buffered.write(lambda txn: _operations(txn, buffered=True))
        assert _dump(buffered) == expected
        with buffered.read() as txn:
            assert txn.account(1).counters() == counters
    assert expected["contacts"] and expected["edges"] and expected["record_log"]


def test_reads_in_the_transaction_see_the_buffer(tmp_path):
    with open_store(tmp_path, durable=False) as store:

        def run(txn):
            txn.buffer_writes()
            account = txn.account(1)
            pid = b"p" * 16
            account.put_contact(pid, _contact("a@example.com", 1))
            assert account.get_contact(pid).value == "a@example.com"
            account.put_contact(pid, _contact("b@example.com", 1))
            assert account.get_contact(pid).value == "b@example.com"
            account.put_edge(pid, b"q" * 16)
            assert account.has_edge(b"q" * 16, pid)
            # A cursor over a sub-database writes its buffered part first.
            assert account.neighbours_of(pid) == [b"q" * 16]
            assert [p for p, _ in account.iter_contacts()] == [pid]
            account.delete_contact(pid)
            assert account.get_contact(pid) is None
            assert list(account.iter_contacts()) == []
            assert account.next_change_seq() == 1
            assert account.next_change_seq() == 2
            assert account.change_seq() == 2
            account.set_counter("changes", 10)
            assert account.change_seq() == 10
            assert account.next_change_seq() == 11
            account.flush_writes()

        store.write(run)
        with store.read() as txn:
            account = txn.account(1)
            assert account.get_contact(b"p" * 16) is None
            assert account.neighbours_of(b"p" * 16) == [b"q" * 16]
            assert account.change_seq() == 11


def test_what_an_operation_leaves_buffered_is_committed_by_the_store(tmp_path):
    with open_store(tmp_path, durable=False) as store:

        def run(txn):
            txn.buffer_writes()
            txn.account(1).put_contact(b"p" * 16, _contact("a@example.com", 1))

        store.write(run)
        with store.read() as txn:
            assert txn.account(1).get_contact(b"p" * 16) == _contact("a@example.com", 1)


def test_a_failed_operation_writes_nothing_it_buffered(tmp_path):
    with open_store(tmp_path, durable=False) as store:

        def run(txn):
            txn.buffer_writes()
            txn.account(1).put_contact(b"p" * 16, _contact("a@example.com", 1))
            raise ValueError("refused")

        with pytest.raises(ValueError):
            store.write(run)
        with store.read() as txn:
            assert txn.account(1).get_contact(b"p" * 16) is None


def test_a_recorded_read_inside_a_buffered_write_keeps_the_buffer(tmp_path):
    with open_store(tmp_path, durable=False) as store:

        def run(txn):
            txn.buffer_writes()
            account = txn.account(1)
            account.put_contact(b"p" * 16, _contact("a@example.com", 1))
            seq = account.next_change_seq()
            with recorded(txn):
                assert account.get_contact(b"p" * 16).value == "a@example.com"
                assert account.next_change_seq() == seq + 1
            assert account.next_change_seq() == seq + 2
            account.flush_writes()

        store.write(run)
        with store.read() as txn:
            assert txn.account(1).get_contact(b"p" * 16).value == "a@example.com"
            assert txn.account(1).change_seq() == 3


def test_only_a_write_transaction_buffers(tmp_path):
    with (
        open_store(tmp_path, durable=False) as store,
        store.read() as txn,
        pytest.raises(ValueError),
    ):
        txn.buffer_writes()
