"""The store's operating rules: format check, atomic writes, map growth, one open per process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from idlink.errors import StoreError, StoreFormatError, StoreFull
from idlink.security.crypto import open_store


def test_a_write_commits_whole_or_not_at_all(tmp_path):
    with open_store(tmp_path, durable=False) as store:

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
    with open_store(tmp_path, durable=False) as store:
        store.write(lambda txn: txn.put_meta(b"format", b"999"))
    with pytest.raises(StoreFormatError):
        open_store(tmp_path, durable=False)


def test_the_same_store_cannot_be_opened_twice_in_one_process(tmp_path):
    with open_store(tmp_path, durable=False), pytest.raises(StoreError):
        open_store(tmp_path, durable=False)
    open_store(tmp_path, durable=False).close()


def test_a_full_map_grows_in_a_single_process_store(tmp_path):
    with open_store(tmp_path, map_size=1 << 20, durable=False) as store:
        for i in range(40):
            store.write(lambda txn, i=i: txn.put_meta(b"k%d" % i, os.urandom(64 << 10)))
        assert store.stats()["map_size"] > 1 << 20
        with store.read() as txn:
            assert len(txn.get_meta(b"k39")) == 64 << 10


def test_a_full_map_is_a_clear_error_with_several_processes(tmp_path):
    with open_store(tmp_path, map_size=1 << 20, multi_process=True, durable=False) as store:
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
        from idlink.security.crypto import open_store
        from idlink.domain.engine import IdentityEngine, RecordInput
        from idlink.domain.contacts import ContactKey
        store = open_store({str(tmp_path)!r})
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

    with open_store(tmp_path) as store:
        engine = IdentityEngine(store, b"s" * 32)
        answer = engine.resolve("acme", ContactKey("phone", "+1 415 555 0001"))
        assert answer.customer.pid.hex() == out.stdout.strip()
        assert {c.value for c in answer.customer.contacts} == {"a@x.com", "+14155550001"}


_GROW = """
import os, sys
from idlink.security.crypto import open_store
# Its own map is small, so it grows the file far past the map of the other process.
with open_store(sys.argv[1], map_size=1 << 20, durable=False) as store:
    for i in range(60):
        store.write(lambda txn, i=i: txn.put_meta(b"grown%d" % i, os.urandom(64 << 10)))
    print(store.stats()["map_size"])
"""


@pytest.mark.parametrize("multi_process", [True, False], ids=["multi-process", "single-process"])
def test_a_map_grown_by_another_process_is_adopted_by_reads_and_writes(tmp_path, multi_process):
    # SPEC 9: several processes share one store. Once another process has
    # written past this process's map, LMDB answers MDB_MAP_RESIZED to every new
    # transaction until the new size is adopted.
    with open_store(
        tmp_path, map_size=1 << 20, multi_process=multi_process, durable=False
    ) as store:
        store.write(lambda txn: txn.put_meta(b"mine", b"1"))
        grown = subprocess.run(
            [sys.executable, "-c", _GROW, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert grown.returncode == 0, grown.stderr
        assert int(grown.stdout) > 1 << 20
        with store.read() as txn:
            assert len(txn.get_meta(b"grown59")) == 64 << 10
            assert txn.get_meta(b"mine") == b"1"
        store.write(lambda txn: txn.put_meta(b"after", b"2"))
        with store.read() as txn:
            assert txn.get_meta(b"after") == b"2"
        assert store.healthy
        assert store.stats()["map_size"] >= int(grown.stdout)


def test_a_write_first_after_the_growth_adopts_the_map_too(tmp_path):
    with open_store(tmp_path, map_size=1 << 20, multi_process=True, durable=False) as store:
        grown = subprocess.run(
            [sys.executable, "-c", _GROW, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert grown.returncode == 0, grown.stderr
        store.write(lambda txn: txn.put_meta(b"after", b"2"))  # the writer meets it first
        assert store.healthy
        with store.read() as txn:
            assert txn.get_meta(b"after") == b"2"
            assert txn.get_meta(b"grown0") is not None


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_the_data_folder_is_0700_and_every_file_in_it_0600(tmp_path):
    folder = tmp_path / "data"
    previous = os.umask(0o022)  # the usual umask: LMDB alone would make data.mdb 0644
    try:
        with open_store(folder, durable=False) as store:
            store.write(lambda txn: txn.put_meta(b"a", b"1"))
            store.backup(tmp_path / "copy")
    finally:
        os.umask(previous)
    assert _mode(folder) == 0o700
    files = {p.name: _mode(p) for p in folder.iterdir()}
    assert {"data.mdb", "lock.mdb", "data.keys"} <= set(files)
    assert files == dict.fromkeys(files, 0o600)
    assert _mode(tmp_path / "copy") == 0o700
    assert _mode(tmp_path / "copy" / "data.mdb") == 0o600


def test_looser_modes_found_at_open_are_tightened_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "data"
    open_store(folder, durable=False).close()
    os.chmod(folder, 0o755)
    for name in ("data.mdb", "lock.mdb", "data.keys"):
        os.chmod(folder / name, 0o644)
    with caplog.at_level("WARNING", logger="idlink.store.env"):
        open_store(folder, durable=False).close()
    assert _mode(folder) == 0o700
    assert {p.name: _mode(p) for p in folder.iterdir()} == dict.fromkeys(
        ["data.mdb", "lock.mdb", "data.keys"], 0o600
    )
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "data.mdb was mode 644" in warned and "now 700" in warned


def test_a_store_of_format_1_is_refused_at_open(tmp_path):
    # Format 1 kept record ids and labels in clear; format 2 does not read it.
    with open_store(tmp_path, durable=False) as store:
        store.write(lambda txn: txn.put_meta(b"format", b"1"))
    with pytest.raises(StoreFormatError) as caught:
        open_store(tmp_path, durable=False)
    assert "store format 1 is not 2" in str(caught.value)
    # The refused open released the folder: opening it again is refused the same way.
    with pytest.raises(StoreFormatError):
        open_store(tmp_path, durable=False)
