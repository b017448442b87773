"""Byte layouts of the store's keys.

Every key starts with the 4-byte account id, so nothing crosses accounts and an
account's data is one prefix range per sub-database.

Record ids never reach the disk in clear (a record id can be a phone number).
The domain names a record by its *canonical key* (:func:`canonical_key`, which
holds the record id), but on disk a record is keyed by a keyed hash of
``(source, record_id)`` and the contact -> record index holds a *record
reference*, ``observed_at`` and that hash (:func:`record_ref`). ``store.txn``
translates between the two.
"""

from __future__ import annotations

import struct

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_OFFSET = 1 << 63

PID_BYTES = 16
RECORD_HASH_BYTES = 16
TIME_BYTES = 8
# Stands for the source of an index entry whose record is missing (a damaged
# store): sources never hold control characters, so no record has it.
MISSING_SOURCE = "\x7f"


def account_prefix(account_id: int) -> bytes:
    return _U32.pack(account_id)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes, offset: int = 0) -> int:
    return int(_U64.unpack_from(data, offset)[0])


def time_key(micros: int) -> bytes:
    """Encode a signed microsecond timestamp so that byte order is time order."""
    return _U64.pack(micros + _OFFSET)


def read_time_key(data: bytes, offset: int = 0) -> int:
    return int(_U64.unpack_from(data, offset)[0]) - _OFFSET


def record_id_key(source: str, record_id: str) -> bytes:
    return source.encode() + b"\0" + record_id.encode()


def canonical_key(observed_at_us: int, source: str, record_id: str) -> bytes:
    """The canonical order of records (SPEC 3.2): observed_at, source, record_id.

    Sources and record ids never contain NUL (control characters are refused),
    so the separator sorts a prefix before its extensions, as tuples do.
    """
    return time_key(observed_at_us) + record_id_key(source, record_id)


def split_canonical_key(key: bytes) -> tuple[int, str, str]:
    source, _, record_id = key[8:].partition(b"\0")
    return read_time_key(key), source.decode(), record_id.decode()


def record_ref(canonical: bytes, record_hash: bytes) -> bytes:
    """The index's reference to a record: its observed_at and the hash of (source, record id)."""
    return canonical[:TIME_BYTES] + record_hash


def missing_record_key(ref: bytes) -> bytes:
    """A canonical key for an index entry whose record does not exist (it sorts by time)."""
    return ref[:TIME_BYTES] + record_id_key(MISSING_SOURCE, ref[TIME_BYTES:].hex())


def hash_of_missing_record_key(canonical: bytes) -> bytes | None:
    """The record hash inside a :func:`missing_record_key`, None for any other key."""
    tail = canonical[TIME_BYTES:]
    marker = MISSING_SOURCE.encode() + b"\0"
    if not tail.startswith(marker):
        return None
    return bytes.fromhex(tail[len(marker) :].decode())
