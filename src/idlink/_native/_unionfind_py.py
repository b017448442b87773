"""Union-find over dense integer ids: the pure-Python twin (the specification).

Union by size with path halving. Root rule: the root of the larger component
wins; on equal sizes the smaller root id wins.
"""

from __future__ import annotations

from collections.abc import Sequence


class UnionFind:
    """Union-find over dense int ids 0..n-1: union by size, path halving."""

    def __init__(self, n: int = 0) -> None:
        self._parent = list(range(n))
        self._size = [1] * n

    def __len__(self) -> int:
        return len(self._parent)

    def add(self) -> int:
        """Append a new singleton and return its id."""
        self._parent.append(len(self._parent))
        self._size.append(1)
        return len(self._parent) - 1

    def grow(self, n: int) -> None:
        """Ensure at least n elements (new ones are singletons)."""
        while len(self._parent) < n:
            self.add()

    def _check(self, x: int) -> None:
        if not 0 <= x < len(self._parent):
            raise IndexError(f"element {x} out of range")

    def find(self, x: int) -> int:
        """The root of x's component."""
        self._check(x)
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        """Join the components of a and b; return the root after the union."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] < self._size[rb] or (self._size[ra] == self._size[rb] and rb < ra):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        return ra

    def size(self, x: int) -> int:
        """The size of x's component."""
        return self._size[self.find(x)]

    def same(self, a: int, b: int) -> bool:
        return self.find(a) == self.find(b)

    def roots(self) -> list[int]:
        """The root of every element, index = element."""
        return [self.find(x) for x in range(len(self._parent))]


def connected_components(n: int, src: Sequence[int], dst: Sequence[int]) -> tuple[int, list[int]]:
    """Label the components of the graph on n nodes with edges src[i]-dst[i].

    Components are numbered 0, 1, 2, ... in order of their smallest node.
    """
    if len(src) != len(dst):
        raise ValueError("src and dst must have the same length")
    uf = UnionFind(n)
    for a, b in zip(src, dst):
        uf.union(int(a), int(b))
    labels = [0] * n
    numbers: dict[int, int] = {}
    for x in range(n):
        root = uf.find(x)
        if root not in numbers:
            numbers[root] = len(numbers)
        labels[x] = numbers[root]
    return len(numbers), labels
