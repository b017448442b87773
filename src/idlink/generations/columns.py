"""Whole-column helpers the generations share: orders of integer keys, PIDs and keys as bytes.

Each gives exactly what the plain numpy or pyarrow call gives, only faster
for the shapes a generation has (millions of rows of small integer keys,
16-byte PIDs).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A combined key must stay below 2**63; one bit is kept spare.
_COMBINED_LIMIT = 1 << 62


def lex_order(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``np.lexsort(keys)`` (the last key sorts first; ties keep their index order).

    Integer keys whose ranges multiply to less than 2**62 are folded into one
    int64 per row, most significant first, and sorted once: with the row's
    index as the last digit when that fits too (every value distinct, so the
    fastest sort is exact), else with a stable sort. lexsort takes several
    times longer than either (0.71 s against 0.09 s for 1.3M rows of two
    keys here). Anything else goes to lexsort.
    """
    if not keys:
        raise ValueError("lex_order needs at least one key")
    size = len(keys[0])
    if size == 0 or any(key.dtype.kind not in "biu" for key in keys):
        return np.lexsort(keys)
    digits: list[tuple[np.ndarray, int, int]] = []
    span = 1
    for key in reversed(keys):  # the primary key first
        low, high = int(key.min()), int(key.max())
        width = high - low + 1
        span *= width
        if span >= _COMBINED_LIMIT:
            return np.lexsort(keys)
        digits.append((key, low, width))
    combined = np.zeros(size, np.int64)
    for key, low, width in digits:
        combined *= width
        combined += key.astype(np.int64) - low
    if span * size < _COMBINED_LIMIT:
        combined *= size
        combined += np.arange(size, dtype=np.int64)
        return np.argsort(combined)
    return np.argsort(combined, kind="stable")


def pid_list(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``column.to_pylist()`` for PIDs: 16-byte values are cast to plain binary first.

    pyarrow builds Python bytes from a fixed-size binary array about 15x more
    slowly than from a binary one (0.6 s against 0.04 s for 500,000 PIDs here).
    """
    if pa.types.is_fixed_size_binary(column.type):
        column = column.cast(pa.binary())
    values: list[bytes] = column.to_pylist()
    return values


def time_keys(micros: np.ndarray) -> np.ndarray:
    """``codec.time_key`` of each microsecond value, as the rows of an (n, 8) uint8 matrix.

    ``time_key`` packs ``micros + 2**63`` as a big-endian unsigned 64-bit
    integer: for an int64 that is its two's-complement bits with the sign bit
    flipped.
    """
    flipped = np.asarray(micros, np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    return flipped.astype(">u8").view(np.uint8).reshape(-1, 8)


def record_id_keys(
    sources: pa.Array | pa.ChunkedArray, record_ids: pa.Array | pa.ChunkedArray
) -> pa.Array | pa.ChunkedArray:
    """``codec.record_id_key`` of each (source, record id) of two string columns, as a column.

    Large binary, so that no column of keys outgrows 32-bit offsets.
    """
    joined: pa.Array | pa.ChunkedArray = pc.binary_join_element_wise(
        sources.cast(pa.large_binary()),
        record_ids.cast(pa.large_binary()),
        pa.scalar(b"\0", pa.large_binary()),
    )
    return joined


def canonical_keys(times: np.ndarray, id_keys: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """``codec.canonical_key`` of each record, from :func:`time_keys` and :func:`record_id_keys`."""
    size = len(times)
    prefix = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(8), size, [None, pa.py_buffer(np.ascontiguousarray(times, np.uint8))]
    ).cast(pa.large_binary())
    keys: list[bytes] = pc.binary_join_element_wise(
        prefix, id_keys, pa.scalar(b"", pa.large_binary())
    ).to_pylist()
    return keys


def byte_order(matrix: np.ndarray) -> np.ndarray:
    """The stable order that sorts the rows of a uint8 matrix as byte strings.

    The rows of a generation are mostly PIDs and keyed hashes, whose first 8
    bytes are all different: then one sort of those bytes as big-endian
    integers gives the whole order (no ties, so stable or not makes no
    difference), about 4x faster than sorting the rows as strings (0.16 s
    against 0.72 s for 1.76M PIDs here). Anything with a tie there is sorted
    as strings.
    """
    rows, width = matrix.shape
    if rows == 0 or width == 0:
        return np.arange(rows, dtype=np.int64)
    matrix = np.ascontiguousarray(matrix, np.uint8)
    if width >= 8:
        head = np.ascontiguousarray(matrix[:, :8]).view(">u8").ravel().astype(np.uint64)
        order = np.argsort(head)
        ordered = head[order]
        if not (ordered[1:] == ordered[:-1]).any():
            return order
    return np.argsort(matrix.view(f"S{width}").ravel(), kind="stable")
