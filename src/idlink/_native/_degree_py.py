"""Connection counting for the cluster cap (SPEC 3.3): the pure-Python twin.

A contact's *connections* are the distinct other contacts it shares a record
with. Ids are dense non-negative ints below 2**32; a pair (a, a) is ignored
and so are repeated ids within a record.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Sequence
from itertools import pairwise

_MAX_ID = 2**32 - 1


def _id(x: int) -> int:
    x = operator.index(x)
    if not 0 <= x <= _MAX_ID:
        raise ValueError(f"contact id {x} out of range 0..2**32-1")
    return x


class ConnectionCounter:
    """Distinct-neighbour counts over records of dense contact ids."""

    __slots__ = ("_degree", "_pairs")

    def __init__(self) -> None:
        self._pairs: set[tuple[int, int]] = set()  # (smaller, larger)
        self._degree: dict[int, int] = {}

    def _connect(self, a: int, b: int) -> bool:
        if a == b:
            return False
        pair = (a, b) if a < b else (b, a)
        if pair in self._pairs:
            return False
        self._pairs.add(pair)
        self._degree[a] = self._degree.get(a, 0) + 1
        self._degree[b] = self._degree.get(b, 0) + 1
        return True

    def add_record(self, ids: Iterable[int]) -> int:
        """Connect every two distinct ids of one record; return how many pairs are new."""
        distinct = sorted({_id(x) for x in ids})  # all checked before anything changes
        new = 0
        for i, a in enumerate(distinct):
            for b in distinct[i + 1 :]:
                new += self._connect(a, b)
        return new

    def connect(self, a: int, b: int) -> bool:
        """Connect two ids; return True if the pair is new."""
        return self._connect(_id(a), _id(b))

    def connected(self, a: int, b: int) -> bool:
        """Return whether a and b share a record (False for a == b)."""
        a, b = _id(a), _id(b)
        return ((a, b) if a < b else (b, a)) in self._pairs

    def degree(self, x: int) -> int:
        """Return how many distinct other ids x shares a record with (0 if unknown)."""
        return self._degree.get(_id(x), 0)

    def pairs(self) -> int:
        """Return the number of distinct connected pairs."""
        return len(self._pairs)


def count_connections(n: int, offsets: Sequence[int], members: Sequence[int]) -> array[int]:
    """Degrees of nodes 0..n-1 over records given in CSR form.

    Record r has members[offsets[r]:offsets[r+1]]; offsets must be
    non-decreasing and within members (an empty offsets means no records).
    Members must be below n. Returns an array('I') of n degrees.
    """
    n = operator.index(n)
    if not 0 <= n <= _MAX_ID + 1:
        raise ValueError(f"n must be in 0..2**32, not {n}")
    bounds = [operator.index(o) for o in offsets]
    nodes = [operator.index(m) for m in members]
    for lo, hi in pairwise(bounds):
        if not 0 <= lo <= hi <= len(nodes):
            raise ValueError("offsets must be non-decreasing and within members")
    if bounds and not 0 <= bounds[0] <= len(nodes):
        raise ValueError("offsets must be non-decreasing and within members")
    for m in nodes:
        if not 0 <= m < n:
            raise IndexError(f"member {m} out of range 0..{n - 1}")
    counter = ConnectionCounter()
    for lo, hi in pairwise(bounds):
        counter.add_record(nodes[lo:hi])
    return array("I", (counter.degree(x) for x in range(n)))
