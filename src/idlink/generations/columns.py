"""Whole-column helpers the generations share: orders of integer keys, PIDs as Python bytes.

Each gives exactly what the plain numpy or pyarrow call gives, only faster
for the shapes a generation has (millions of rows of small integer keys,
16-byte PIDs).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
