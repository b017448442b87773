"""Bulk writes of a whole generation into an empty account: sorted, appending, sealed as txn.py.

``idlink load`` (generations/materialize.py) writes every derived row of an
account at once. The rows are spelled here, by the same layouts and the same
sealing as :mod:`idlink.store.txn` (a value is sealed whole with its LMDB key
as the associated data; records keyed by the keyed hash of (source, record
id); the contact -> record index holds (observed_at, that hash); national
numbers stand behind a keyed hash), so a bulk-written account reads exactly as
one the engine wrote row by row.

:class:`AccountKeys` spells keys and seals values outside a transaction (it
holds the account prefix and the store's cipher, nothing of LMDB), so the
caller can sort whole tables before any write. :func:`append_rows` then
writes one sorted batch inside a write transaction with py-lmdb's
``Cursor.putmulti(append=True)`` (``MDB_APPEND``; ``MDB_APPENDDUP`` on the
dupsort ``contact_records``), which fills pages instead of splitting them.
When an append is impossible, because a key is not after the last one of the
sub-database (an account created after the target holds larger keys), the
batch is written with plain puts instead.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from idlink.store import codec
from idlink.store.txn import _CONTACT_SEQ, _COUNTER, _CUSTOMER_SEQ, SUBDATABASES, AccountTxn

# The sub-databases a generation writes (the derived ones).
TABLES = (
    "contacts",
    "records",
    "contact_records",
    "edges",
    "customers",
    "isolated",
    "national",
)
SEALED = frozenset({"contacts", "records", "customers"})


class AccountKeys:
    """Keys and sealed values of one account, spelled as :mod:`idlink.store.txn` spells them."""

    def __init__(self, txn: AccountTxn) -> None:
        self._txn = txn._txn
        self.prefix = txn._prefix
        self.account_id = txn.account_id
        self.cipher = txn.cipher

    def contact(self, pid: bytes) -> bytes:
        return self.prefix + pid

    customer = contact
    isolated = contact

    def contact_keys(self, pids: Sequence[bytes]) -> list[bytes]:
        """The keys of many contacts (also of their customers, isolated entries, index rows)."""
        p = self.prefix
        return [p + pid for pid in pids]

    @staticmethod
    def edge_rows(
        contact_keys: Sequence[bytes], pids: Sequence[bytes], a: Sequence[int], b: Sequence[int]
    ) -> list[tuple[bytes, bytes]]:
        """Edge rows (a -> b) from :meth:`contact_keys` of a and the PIDs of b."""
        return [(contact_keys[x] + pids[y], b"") for x, y in zip(a, b, strict=True)]

    @staticmethod
    def edge_rows_of(
        key_matrix: np.ndarray, pid_matrix: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> list[tuple[bytes, bytes]]:
        """:meth:`edge_rows` from :func:`byte_matrix` of the contact keys and of the PIDs."""
        if not len(a):
            return []
        joined = np.concatenate([key_matrix[a], pid_matrix[b]], axis=1)
        return list(zip(split_rows(joined), itertools.repeat(b"", len(a)), strict=False))

    def record_hash(self, source: str, record_id: str) -> bytes:
        return self._txn._record_hash(self.prefix, codec.record_id_key(source, record_id))

    def record_hashes(self, id_keys: Sequence[bytes]) -> list[bytes]:
        """The on-disk hash of each ``codec.record_id_key``, many at once."""
        p = self.prefix
        if self.cipher is None:
            size = codec.RECORD_HASH_BYTES
            return [hashlib.blake2b(p + k, digest_size=size).digest() for k in id_keys]
        hashes: list[bytes] = self.cipher.record_hashes(p, id_keys)
        return hashes

    def record(self, record_hash: bytes) -> bytes:
        return self.prefix + record_hash

    @staticmethod
    def record_refs_of(times: np.ndarray, hash_matrix: np.ndarray | None) -> np.ndarray:
        """The contact -> record index's values (``codec.record_ref``) as the rows of a matrix.

        From the rows of their time keys (``codec.time_key``) and of their record
        hashes (:func:`byte_matrix`, which every hash of one length gives).
        """
        if hash_matrix is None:
            raise ValueError("record hashes of different lengths")
        if not len(times):
            return np.zeros((0, codec.TIME_BYTES + codec.RECORD_HASH_BYTES), np.uint8)
        return np.concatenate([times, hash_matrix], axis=1)

    def edge(self, a: bytes, b: bytes) -> bytes:
        return self.prefix + a + b

    def national(self, national: str, pid: bytes) -> bytes:
        return self.prefix + self._txn._national_key(self.prefix, national) + pid

    def nationals(self, nationals: Sequence[str], pids: Sequence[bytes]) -> list[bytes]:
        """:meth:`national` of each (national number, PID), the keyed hashes in one call."""
        p = self.prefix
        if self.cipher is None:
            return [p + n.encode() + b"\0" + pid for n, pid in zip(nationals, pids, strict=True)]
        hashes = self.cipher.index_hashes(p, nationals)
        return [p + h + pid for h, pid in zip(hashes, pids, strict=True)]

    def seal(self, key: bytes, clear: bytes) -> bytes:
        """A value as stored under ``key`` in a sealed sub-database (txn.Txn._seal)."""
        return clear if self.cipher is None else self.cipher.seal(clear, key)  # type: ignore[no-any-return]

    def seal_many(self, rows: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if self.cipher is None:
            return list(rows)
        sealed: list[tuple[bytes, bytes]] = self.cipher.seal_rows(rows)
        return sealed


def byte_matrix(values: Sequence[bytes]) -> np.ndarray | None:
    """Equal-length byte strings as the rows of a uint8 matrix (None when lengths differ)."""
    if not values:
        return np.zeros((0, 0), np.uint8)
    width = len(values[0])
    joined = b"".join(values)
    if len(joined) != width * len(values) or len(set(map(len, values))) != 1:
        return None
    return np.frombuffer(joined, np.uint8).reshape(len(values), width)


def split_rows(matrix: np.ndarray) -> list[bytes]:
    """The rows of a uint8 matrix as byte strings."""
    width = matrix.shape[1] if matrix.ndim == 2 else 0
    if not width:
        return [b""] * len(matrix)
    # Each row as one opaque (void) item: tolist() gives its bytes, trailing NULs kept
    # (an "S" dtype would strip them), about 3x faster than slicing one buffer.
    rows: list[bytes] = np.ascontiguousarray(matrix, np.uint8).view(f"V{width}").ravel().tolist()
    return rows


def is_empty(txn: AccountTxn) -> bool:
    """Whether the account holds no contact, record or customer (a target for a generation)."""
    t, p = txn._txn, txn._prefix
    for db in ("contacts", "records", "customers", "contact_records", "edges"):
        cursor = t._raw.cursor(db=t._dbs[db])
        if cursor.set_range(p) and bytes(cursor.key()).startswith(p):
            return False
    return True


def append_rows(txn: AccountTxn, table: str, rows: Sequence[tuple[bytes, bytes]]) -> bool:
    """Write one batch of rows, sorted by key (and value, for contact_records), into ``table``.

    Every key must belong to the account. Returns True when the batch was
    appended, False when it had to be written with plain puts.
    """
    if table not in TABLES:
        raise ValueError(f"{table} is not a sub-database a generation writes")
    if not rows:
        return True
    t, p = txn._txn, txn._prefix
    for key, _ in (rows[0], rows[-1]):
        if not key.startswith(p):
            raise ValueError("a bulk row outside the account")
    dupsort = SUBDATABASES[table]
    cursor = t._raw.cursor(db=t._dbs[table])
    appendable = True
    if cursor.last():
        last_key = bytes(cursor.key())
        first_key, first_value = rows[0]
        if dupsort:
            appendable = (first_key, first_value) > (last_key, bytes(cursor.value()))
        else:
            appendable = first_key > last_key
    if appendable:
        consumed, added = cursor.putmulti(rows, dupdata=True, overwrite=True, append=True)
        if consumed == added == len(rows):
            return True
        # A row out of order inside the batch is not written by MDB_APPEND: the
        # rest goes in with plain puts (each put of an existing key/pair is a no-op).
    cursor.putmulti(rows, dupdata=True, overwrite=True, append=False)
    return False


def set_sequences(txn: AccountTxn, contacts: int, customers: int) -> None:
    """Raise the account's contact and customer counters (first_seen, created_seq) to these."""
    t, p = txn._txn, txn._prefix
    for name, value in ((_CONTACT_SEQ + p, contacts), (_CUSTOMER_SEQ + p, customers)):
        if t.counter(name) < value:
            t.put_meta(_COUNTER + name, codec.u64(value))


def entry_overhead() -> int:
    """Bytes LMDB spends on one row beside its key and value (node header, page pointer)."""
    return 8 + 2


def stats_of(txn: AccountTxn) -> dict[str, Any]:
    """How many rows of each derived table the account holds (tests, reports)."""
    t, p = txn._txn, txn._prefix
    counts: dict[str, Any] = {}
    for db in TABLES:
        n = 0
        for _ in t._scan(db, p):
            n += 1
        counts[db] = n
    return counts
