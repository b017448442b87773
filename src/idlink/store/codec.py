"""Byte layouts of the store's keys.

Every key starts with the 4-byte account id, so nothing crosses accounts and an
account's data is one prefix range per sub-database.
"""

from __future__ import annotations

import struct

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_OFFSET = 1 << 63

PID_BYTES = 16


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
