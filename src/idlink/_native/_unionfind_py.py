"""Union-find over dense integer ids: the pure-Python twin (the specification).

Union by size with path halving. Root rule: the root of the larger component
wins; on equal sizes the smaller root id wins, so the structure is the same
whatever machine or implementation built it (STYLE habit 4).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable

_MAX_ELEMENTS = 2**32  # ids are uint32 in the compiled twin


def _count(n: int) -> int:
    n = operator.index(n)
    if not 0 <= n <= _MAX_ELEMENTS:
        raise ValueError(f"the number of elements must be in 0..2**32, not {n}")
    return n


class UnionFind:
    """Union-find over dense int ids 0..n-1: union by size, path halving."""

    __slots__ = ("_parent", "_size")

    def __init__(self, n: int = 0) -> None:
        n = _count(n)
        self._parent = list(range(n))
        self._size = [1] * n

    def __len__(self) -> int:
        return len(self._parent)

    def add(self) -> int:
        """Append a new singleton and return its id."""
        x = len(self._parent)
        if x >= _MAX_ELEMENTS:
            raise ValueError("a union-find holds at most 2**32 elements")
        self._parent.append(x)
        self._size.append(1)
        return x

    def grow(self, n: int) -> None:
        """Ensure at least n elements; the new ones are singletons."""
        n = _count(n)
        old = len(self._parent)
        if n > old:
            self._parent.extend(range(old, n))
            self._size.extend([1] * (n - old))

    def _check(self, x: int) -> int:
        x = operator.index(x)
        if not 0 <= x < len(self._parent):
            raise IndexError(f"element {x} out of range")
        return x

    def find(self, x: int) -> int:
        """Return the root of x's component."""
        x = self._check(x)
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        """Join the components of a and b; return the root after the union."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        size = self._size
        # Root rule: the larger component's root wins; on a tie the smaller id.
        if size[ra] < size[rb] or (size[ra] == size[rb] and rb < ra):
            ra, rb = rb, ra
        self._parent[rb] = ra
        size[ra] += size[rb]
        return ra

    def size(self, x: int) -> int:
        """Return the size of x's component."""
        return self._size[self.find(x)]

    def same(self, a: int, b: int) -> bool:
        """Return whether a and b are in one component."""
        return self.find(a) == self.find(b)

    def roots(self) -> list[int]:
        """Return the root of every element (index = element)."""
        return [self.find(x) for x in range(len(self._parent))]


def connected_components(n: int, src: Iterable[int], dst: Iterable[int]) -> tuple[int, array[int]]:
    """Label the components of the graph on n nodes with edges src[i]-dst[i].

    `src` and `dst` are buffers of uint32 (array('I'), memoryview, numpy) or
    sequences of ints, of equal length. Returns (number of components,
    labels) where labels is an array('I') and labels[i] is the component of
    node i; components are numbered 0, 1, 2, ... in the order of their
    smallest node, so node 0 is always in component 0.
    """
    uf = UnionFind(n)
    sources, targets = list(src), list(dst)
    if len(sources) != len(targets):
        raise ValueError("src and dst must have the same length")
    for a, b in zip(sources, targets, strict=True):
        uf.union(a, b)
    labels = array("I", bytes(4 * len(uf)))
    numbers: dict[int, int] = {}
    for x in range(len(uf)):
        labels[x] = numbers.setdefault(uf.find(x), len(numbers))
    return len(numbers), labels
