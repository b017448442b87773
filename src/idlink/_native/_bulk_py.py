"""Rows of a bulk load, encoded and sealed in batches: the pure-Python twin (the specification).

``idlink load`` (generations/materialize.py) writes millions of rows whose
values are small protobuf messages of :mod:`idlink.store.v1` sealed with
AES-GCM. These build the same bytes without a message object per row:

- :func:`contact_states` and :func:`record_states` spell the proto3 wire
  format of ``ContactState`` and ``RecordState`` (fields in number order,
  fields at their default value left out, as ``SerializeToString`` does);
  tests/generations/test_bulk_native.py compares them with
  ``SerializeToString`` on random messages, byte for byte;
- :func:`seal_rows` seals ``(key, clear)`` rows as ``Cipher.seal`` does
  (header, nonce, AES-GCM with the LMDB key as the associated data), the
  nonces cut from one random buffer the caller gives.

The compiled twin ``_bulk_c`` gives the same bytes for the same arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12

# Wire types: 0 varint, 2 length-delimited.
_MASK64 = (1 << 64) - 1


def _varint(value: int) -> bytes:
    value &= _MASK64  # negative int64 values are ten bytes, two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int_field(number: int, value: int) -> bytes:
    return _tag(number, 0) + _varint(value) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(value)) + value if value else b""


def _text_field(number: int, value: str) -> bytes:
    return _bytes_field(number, value.encode("utf-8"))


def _repeated(number: int, values: Sequence[bytes]) -> bytes:
    tag = _tag(number, 2)
    return b"".join(tag + _varint(len(v)) + v for v in values)


def _check_unsigned(value: int, bits: int, name: str) -> None:
    if value < 0 or value >> bits:
        raise ValueError(f"{name} {value} is out of range for uint{bits}")


def _check_signed(value: int, name: str) -> None:
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"{name} {value} is out of range for int64")


def contact_states(
    types: Sequence[str],
    sources: Sequence[str],
    values: Sequence[str],
    reasons: Sequence[str],
    first_seen: Sequence[int],
    customers: Sequence[bytes],
    connections: Sequence[int],
    created_at_us: Sequence[int],
    first_keys: Sequence[bytes],
    first_positions: Sequence[int],
) -> list[bytes]:
    """``ContactState(...).SerializeToString()`` per row (isolation fields unset), in one call."""
    count = len(types)
    for column in (
        sources,
        values,
        reasons,
        first_seen,
        customers,
        connections,
        created_at_us,
        first_keys,
        first_positions,
    ):
        if len(column) != count:
            raise ValueError("contact_states: the columns differ in length")
    out: list[bytes] = []
    for i in range(count):
        _check_unsigned(first_seen[i], 64, "first_seen")
        _check_unsigned(connections[i], 32, "connections")
        _check_signed(created_at_us[i], "created_at_us")
        _check_unsigned(first_positions[i], 32, "first_position")
        out.append(
            b"".join(
                (
                    _text_field(1, types[i]),
                    _text_field(2, sources[i]),
                    _text_field(3, values[i]),
                    _text_field(4, reasons[i]),
                    _int_field(5, first_seen[i]),
                    _bytes_field(6, customers[i]),
                    _int_field(7, connections[i]),
                    _int_field(12, created_at_us[i]),
                    _bytes_field(14, first_keys[i]),
                    _int_field(15, first_positions[i]),
                )
            )
        )
    return out


def record_states(
    sources: Sequence[str],
    record_ids: Sequence[str],
    observed_at_us: Sequence[int],
    contact_pids: Sequence[bytes],
    contact_offsets: Sequence[int],
    group_pids: Sequence[bytes],
    group_offsets: Sequence[int],
    outcome: int,
    authors: Sequence[str],
    stored_at_us: Sequence[int],
) -> list[bytes]:
    """``RecordState(...).SerializeToString()`` per row, without conflict PIDs, in one call.

    Row i's contacts are ``contact_pids[contact_offsets[i]:contact_offsets[i + 1]]``,
    its group likewise; every row has the same ``outcome``.
    """
    count = len(sources)
    for column in (record_ids, observed_at_us, authors, stored_at_us):
        if len(column) != count:
            raise ValueError("record_states: the columns differ in length")
    if len(contact_offsets) != count + 1 or len(group_offsets) != count + 1:
        raise ValueError("record_states: the offsets need one more entry than the rows")
    if count and (
        contact_offsets[count] > len(contact_pids) or group_offsets[count] > len(group_pids)
    ):
        raise ValueError("record_states: an offset is past the end of its PIDs")
    if not -(1 << 31) <= outcome < (1 << 31):
        raise ValueError(f"outcome {outcome} is out of range for int32")
    out: list[bytes] = []
    for i in range(count):
        lo, hi = contact_offsets[i], contact_offsets[i + 1]
        glo, ghi = group_offsets[i], group_offsets[i + 1]
        if not (0 <= lo <= hi and 0 <= glo <= ghi):
            raise ValueError("record_states: the offsets must not decrease")
        _check_signed(observed_at_us[i], "observed_at_us")
        _check_signed(stored_at_us[i], "stored_at_us")
        out.append(
            b"".join(
                (
                    _text_field(1, sources[i]),
                    _text_field(2, record_ids[i]),
                    _int_field(3, observed_at_us[i]),
                    _repeated(4, contact_pids[lo:hi]),
                    _repeated(5, group_pids[glo:ghi]),
                    _int_field(6, outcome),
                    _text_field(8, authors[i]),
                    _int_field(9, stored_at_us[i]),
                )
            )
        )
    return out


def seal_rows(
    key: bytes, head: bytes, randomness: bytes, rows: Sequence[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """``(lmdb_key, head + nonce + AES-GCM(clear, aad=lmdb_key))`` per ``(lmdb_key, clear)`` row.

    Row i's nonce is ``randomness[12 * i : 12 * (i + 1)]``; ``key`` is the
    AES key (16, 24 or 32 bytes).
    """
    if len(randomness) < NONCE_BYTES * len(rows):
        raise ValueError("seal_rows: the randomness holds fewer nonces than there are rows")
    encrypt = AESGCM(key).encrypt
    out: list[tuple[bytes, bytes]] = []
    at = 0
    for lmdb_key, clear in rows:
        nonce = randomness[at : at + NONCE_BYTES]
        at += NONCE_BYTES
        out.append((lmdb_key, head + nonce + encrypt(nonce, clear, lmdb_key)))
    return out


def customer_states(
    contact_pids: Sequence[bytes],
    contact_offsets: Sequence[int],
    created_seq: Sequence[int],
    created_at_us: Sequence[int],
    watermarks: Sequence[bytes],
    split_from: Sequence[bytes],
    updated_at_us: Sequence[int],
) -> list[bytes]:
    """``CustomerState(...).SerializeToString()`` per row (no profile), in one call.

    Row i's members are ``contact_pids[contact_offsets[i]:contact_offsets[i + 1]]``.
    """
    count = len(created_seq)
    for column in (created_at_us, watermarks, split_from, updated_at_us):
        if len(column) != count:
            raise ValueError("customer_states: the columns differ in length")
    if len(contact_offsets) != count + 1:
        raise ValueError("customer_states: the offsets need one more entry than the rows")
    if count and contact_offsets[count] > len(contact_pids):
        raise ValueError("customer_states: an offset is past the end of its PIDs")
    out: list[bytes] = []
    for i in range(count):
        lo, hi = contact_offsets[i], contact_offsets[i + 1]
        if not 0 <= lo <= hi:
            raise ValueError("customer_states: the offsets must not decrease")
        _check_unsigned(created_seq[i], 64, "created_seq")
        _check_signed(created_at_us[i], "created_at_us")
        _check_signed(updated_at_us[i], "updated_at_us")
        out.append(
            b"".join(
                (
                    _repeated(1, contact_pids[lo:hi]),
                    _int_field(2, created_seq[i]),
                    _int_field(3, created_at_us[i]),
                    _bytes_field(4, watermarks[i]),
                    _bytes_field(5, split_from[i]),
                    _int_field(7, updated_at_us[i]),
                )
            )
        )
    return out


def keyed_blake2b_many(
    key: bytes, digest_size: int, prefix: bytes, items: Sequence[bytes]
) -> list[bytes]:
    """``hashlib.blake2b(prefix + item, key=key, digest_size=digest_size).digest()`` per item."""
    if not 1 <= len(key) <= 64:
        raise ValueError("keyed_blake2b_many: the key must be 1 to 64 bytes")
    if not 1 <= digest_size <= 64:
        raise ValueError("keyed_blake2b_many: the digest size must be 1 to 64 bytes")
    if not prefix:
        raise ValueError("keyed_blake2b_many: the prefix must not be empty")
    keyed = hashlib.blake2b(prefix, key=key, digest_size=digest_size)
    out: list[bytes] = []
    for item in items:
        if not isinstance(item, bytes):
            raise TypeError(f"expected bytes, got {type(item).__name__}")
        state = keyed.copy()
        state.update(item)
        out.append(state.digest())
    return out


def hmac_sha256_many(key: bytes, prefix: bytes, texts: Sequence[str], size: int) -> list[bytes]:
    """``hmac.digest(key, prefix + text.encode(), "sha256")[:size]`` per text, in one call."""
    if not 0 <= size <= 32:
        raise ValueError("hmac_sha256_many: size must be 0 to 32")
    digest = hmac.digest
    return [digest(key, prefix + text.encode(), "sha256")[:size] for text in texts]


__all__ = [
    "contact_states",
    "customer_states",
    "hmac_sha256_many",
    "keyed_blake2b_many",
    "record_states",
    "seal_rows",
]
