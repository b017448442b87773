"""The store's operating rules: format check, atomic writes, map growth, one open per process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from idlink.domain.errors import StoreError, StoreFormatError, StoreFull
from idlink.store.env import Store


def test_a_write_commits_whole_or_not_at_all(tmp_path):
    with Store(tmp_path, durable=False) as store:

        def half_then_fail(txn):
            txn.put_meta(b"a", b"1")
            raise RuntimeError("operation failed")

        with pytest.raises(RuntimeError):
            store.write(half_then_fail)
        with store.read() as txn:
            assert txn.get_meta(b"a") is None
        store.write(lambda txn: txn.put_meta(b"a", b"2"))
        with store.read() as txn:
            assert txn.get_meta(b"a") == b"2"


def test_a_store_of_another_format_is_refused(tmp_path):
    with Store(tmp_path, durable=False) as store:
        store.write(lambda txn: txn.put_meta(b"format", b"999"))
    with pytest.raises(StoreFormatError):
        Store(tmp_path, durable=False)


def test_the_same_store_cannot_be_opened_twice_in_one_process(tmp_path):
    with Store(tmp_path, durable=False), pytest.raises(StoreError):
        Store(tmp_path, durable=False)
    Store(tmp_path, durable=False).close()


def test_a_full_map_grows_in_a_single_process_store(tmp_path):
    with Store(tmp_path, map_size=1 << 20, durable=False) as store:
        for i in range(40):
            store.write(lambda txn, i=i: txn.put_meta(b"k%d" % i, os.urandom(64 << 10)))
        assert store.stats()["map_size"] > 1 << 20
        with store.read() as txn:
            assert len(txn.get_meta(b"k39")) == 64 << 10


def test_a_full_map_is_a_clear_error_with_several_processes(tmp_path):
    with Store(tmp_path, map_size=1 << 20, multi_process=True, durable=False) as store:
        with pytest.raises(StoreFull):
            for i in range(40):
                store.write(lambda txn, i=i: txn.put_meta(b"k%d" % i, os.urandom(64 << 10)))
        # the failed write left nothing behind and the store still works
        with store.read() as txn:
            assert txn.get_meta(b"k%d" % i) is None
        store.write(lambda txn: txn.put_meta(b"small", b"1"))


def test_reopening_after_the_process_ends_finds_everything(tmp_path):
    writer = textwrap.dedent(
        f"""
        from idlink.store.env import Store
        from idlink.domain.engine import IdentityEngine, RecordInput
        from idlink.domain.contacts import ContactKey
        store = Store({str(tmp_path)!r})
        engine = IdentityEngine(store, b"s" * 32)
        engine.link("acme", RecordInput("crm", "1", [ContactKey("email", "a@x.com"),
                                                     ContactKey("phone", "+14155550001")], 1))
        print(engine.resolve("acme", ContactKey("email", "a@x.com")).customer.pid.hex())
        import os
        os._exit(0)  # no clean close: what was committed must be there
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", writer], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    from idlink.domain.contacts import ContactKey
    from idlink.domain.engine import IdentityEngine

    with Store(tmp_path) as store:
        engine = IdentityEngine(store, b"s" * 32)
        answer = engine.resolve("acme", ContactKey("phone", "+1 415 555 0001"))
        assert answer.customer.pid.hex() == out.stdout.strip()
        assert {c.value for c in answer.customer.contacts} == {"a@x.com", "+14155550001"}
