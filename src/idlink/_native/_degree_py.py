"""Connection (degree) counting for the cluster cap: the pure-Python twin."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class ConnectionCounter:
    """Distinct-neighbour counts over records of dense contact ids."""

    def __init__(self) -> None:
        self._pairs: set[tuple[int, int]] = set()
        self._degree: dict[int, int] = {}

    def connect(self, a: int, b: int) -> bool:
        """Connect two ids; True if the pair is new."""
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
        """Connect every two distinct ids of a record; return how many pairs were new."""
        unique = list(dict.fromkeys(ids))
        new = 0
        for i, a in enumerate(unique):
            for b in unique[i + 1 :]:
                new += self.connect(a, b)
        return new

    def connected(self, a: int, b: int) -> bool:
        return ((a, b) if a < b else (b, a)) in self._pairs

    def degree(self, x: int) -> int:
        """Distinct other ids x shares a record with."""
        return self._degree.get(x, 0)

    def pairs(self) -> int:
        return len(self._pairs)


def count_connections(n: int, offsets: Sequence[int], members: Sequence[int]) -> list[int]:
    """Degrees of nodes 0..n-1 over records in CSR form (members[offsets[r]:offsets[r+1]])."""
    counter = ConnectionCounter()
    for r in range(len(offsets) - 1):
        counter.add_record(members[offsets[r] : offsets[r + 1]])
    return [counter.degree(x) for x in range(n)]
