"""The data folder: one server holds it (server.lock), and compaction in place.

A second, unrelated server on a folder would keep its own caches and sweeps
beside the first; ``idlink serve`` takes the folder's lock and a second one
is refused with the holder's pid. ``compact_in_place`` rewrites data.mdb
without its free pages, only while nobody else has the store open.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from idlink.errors import StoreFormatError
from idlink.security.crypto import open_store
from idlink.store.env import StoreInUse, compact_in_place, server_lock

_HOLD = """
import sys, time
from idlink.security.crypto import open_store
from idlink.store.env import server_lock
held = {what}(sys.argv[1]{args})
print("holding", flush=True)
time.sleep(60)
"""


def hold(tmp_path, what: str, args: str = "") -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(what=what, args=args), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "holding"
    return child


def stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait(20)
    if child.stdout is not None:
        child.stdout.close()


def test_a_second_holder_of_the_server_lock_is_refused_with_the_first_ones_pid(tmp_path):
    child = hold(tmp_path, "server_lock", ', "idlink serve --listen 127.0.0.1:1"')
    try:
        with pytest.raises(StoreInUse) as caught:
            server_lock(tmp_path, "idlink serve --listen 127.0.0.1:2")
        message = str(caught.value)
        assert f"pid {child.pid} (idlink serve --listen 127.0.0.1:1)" in message
        assert "--workers" in message
    finally:
        stop(child)
    # The lock ends with its process, even one killed without a word.
    with server_lock(tmp_path, "idlink serve"):
        assert (tmp_path / "server.lock").read_text().startswith(f"pid {os.getpid()} ")
        assert os.stat(tmp_path / "server.lock").st_mode & 0o777 == 0o600
    with server_lock(tmp_path, "again"):
        pass


def test_tools_share_a_folder_with_its_server(tmp_path):
    # keys create, backup, check and rotate-key open the store beside the server.
    with server_lock(tmp_path, "idlink serve"), open_store(tmp_path, multi_process=True) as store:
        store.write(lambda txn: txn.put_meta(b"a", b"1"))


def fill(folder, count: int = 200) -> None:
    with open_store(folder, durable=False) as store:
        for i in range(count):
            store.write(lambda txn, i=i: txn.put_meta(b"k%04d" % i, b"secret-%04d" % i * 40))
        store.write(lambda txn: [txn._delete("meta", b"k%04d" % i) for i in range(0, count, 2)])


def test_compaction_drops_free_pages_and_keeps_every_entry(tmp_path):
    fill(tmp_path)
    (tmp_path / ".compact-1.mdb").write_bytes(b"left by an interrupted compaction")
    before = (tmp_path / "data.mdb").read_bytes()
    assert b"secret-0000" in before  # a deleted value, still in a free page
    sizes = compact_in_place(tmp_path)
    after = (tmp_path / "data.mdb").read_bytes()
    assert sizes == (len(before), len(after)) and len(after) < len(before)
    assert b"secret-0000" not in after
    assert os.stat(tmp_path / "data.mdb").st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".compact")]
    with open_store(tmp_path, durable=False) as store, store.read() as txn:
        assert txn.get_meta(b"k0000") is None
        assert txn.get_meta(b"k0001") == b"secret-0001" * 40
        assert txn.get_meta(b"k0199") == b"secret-0199" * 40
        store.write(lambda txn: txn.put_meta(b"new", b"1"))


def test_compaction_is_refused_while_a_server_or_another_process_has_the_store(tmp_path):
    fill(tmp_path, 20)
    unchanged = (tmp_path / "data.mdb").read_bytes()
    server = hold(tmp_path, "server_lock", ', "idlink serve --listen 127.0.0.1:1"')
    try:
        with pytest.raises(StoreInUse, match=f"pid {server.pid}"):
            compact_in_place(tmp_path)
    finally:
        stop(server)
    tool = hold(tmp_path, "open_store", ", multi_process=True")
    try:
        with pytest.raises(StoreInUse, match="another process has the store"):
            compact_in_place(tmp_path)
    finally:
        stop(tool)
    assert (tmp_path / "data.mdb").read_bytes() == unchanged
    with (
        open_store(tmp_path, durable=False),
        pytest.raises(Exception, match="open in this process"),
    ):
        compact_in_place(tmp_path)
    compact_in_place(tmp_path)  # alone at last


def test_a_store_of_another_format_is_not_compacted(tmp_path):
    with open_store(tmp_path, durable=False) as store:
        store.write(lambda txn: txn.put_meta(b"format", b"1"))
    unchanged = (tmp_path / "data.mdb").read_bytes()
    with pytest.raises(StoreFormatError):
        compact_in_place(tmp_path)
    assert (tmp_path / "data.mdb").read_bytes() == unchanged
