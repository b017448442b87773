"""Union-find and connected components, on both implementations.

The rules are tested on each implementation (`native_impl`); the tests
named `..._matches_the_twin` cross the compiled module against the twin
(`compiled`, tests/_native/conftest.py).
"""

from __future__ import annotations

from array import array
from collections import deque
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


@st.composite
def graphs(draw: st.DrawFn, max_nodes: int = 40) -> tuple[int, list[int], list[int]]:
    n = draw(st.integers(0, max_nodes))
    if n == 0:
        return 0, [], []
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))
    return n, [a for a, _ in edges], [b for _, b in edges]


def bfs_components(n: int, src: list[int], dst: list[int]) -> list[frozenset[int]]:
    """Return the components of the graph, found the slow, obvious way."""
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(src, dst, strict=True):
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen = [False] * n
    out = []
    for start in range(n):
        if seen[start]:
            continue
        seen[start] = True
        queue, members = deque([start]), {start}
        while queue:
            for nxt in neighbours[queue.popleft()]:
                if not seen[nxt]:
                    seen[nxt] = True
                    members.add(nxt)
                    queue.append(nxt)
        out.append(frozenset(members))
    return out


# --- the root rule ------------------------------------------------------------------------


def test_on_equal_sizes_the_smaller_root_wins(native_impl: SimpleNamespace) -> None:
    uf = native_impl.unionfind.UnionFind(6)
    assert uf.union(0, 1) == 0
    assert uf.union(3, 2) == 2
    assert uf.union(5, 4) == 4
    assert uf.union(3, 1) == 0  # sizes 2 and 2: root 0 beats root 2
    assert uf.roots() == [0, 0, 0, 0, 4, 4]


def test_the_larger_component_root_wins(native_impl: SimpleNamespace) -> None:
    uf = native_impl.unionfind.UnionFind(5)
    assert uf.union(3, 4) == 3
    assert uf.union(0, 4) == 3  # size 2 beats size 1 although 0 < 3
    assert uf.size(0) == 3
    assert uf.union(1, 2) == 1
    assert uf.union(1, 0) == 3  # size 3 beats size 2
    assert uf.roots() == [3, 3, 3, 3, 3]
    assert uf.size(2) == 5


def test_union_of_one_component_returns_its_root(native_impl: SimpleNamespace) -> None:
    uf = native_impl.unionfind.UnionFind(3)
    uf.union(2, 1)
    assert uf.union(1, 2) == 1
    assert uf.union(0, 0) == 0
    assert uf.size(1) == 2


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=80))
def test_every_result_matches_the_twin(compiled: SimpleNamespace, ops) -> None:
    # The root rule makes the whole structure deterministic: every answer of
    # the compiled module equals the specification's (the twin's).
    from idlink._native import _unionfind_py as twin

    ours, spec = compiled.unionfind.UnionFind(), twin.UnionFind()
    for a, b in ops:
        ours.grow(max(a, b) + 1)
        spec.grow(max(a, b) + 1)
        assert ours.union(a, b) == spec.union(a, b)
        assert ours.size(a) == spec.size(a)
        assert ours.same(a, b)
    assert ours.roots() == spec.roots()
    assert len(ours) == len(spec)


# --- elements -------------------------------------------------------------------------------


def test_add_grow_and_len(native_impl: SimpleNamespace) -> None:
    uf = native_impl.unionfind.UnionFind()
    assert len(uf) == 0
    assert uf.add() == 0
    assert uf.add() == 1
    uf.grow(5)
    assert len(uf) == 5
    uf.grow(3)  # never shrinks
    assert len(uf) == 5
    assert uf.roots() == [0, 1, 2, 3, 4]
    assert [uf.size(x) for x in range(5)] == [1] * 5
    assert not uf.same(0, 4)
    uf.union(0, 4)
    assert uf.same(4, 0)
    assert native_impl.unionfind.UnionFind(n=3).roots() == [0, 1, 2]


@pytest.mark.parametrize(
    "call",
    [
        lambda uf: uf.find(3),
        lambda uf: uf.find(-1),
        lambda uf: uf.find(2**70),
        lambda uf: uf.union(0, 3),
        lambda uf: uf.union(-1, 0),
        lambda uf: uf.size(3),
        lambda uf: uf.same(0, 3),
    ],
)
def test_out_of_range_ids_raise_index_error(native_impl: SimpleNamespace, call) -> None:
    with pytest.raises(IndexError):
        call(native_impl.unionfind.UnionFind(3))


def test_bad_sizes_and_types(native_impl: SimpleNamespace) -> None:
    unionfind = native_impl.unionfind
    with pytest.raises(ValueError):
        unionfind.UnionFind(-1)
    with pytest.raises(ValueError):
        unionfind.UnionFind(3).grow(-1)
    with pytest.raises(TypeError):
        unionfind.UnionFind(3).find(1.0)
    with pytest.raises(ValueError):
        unionfind.connected_components(-1, [], [])


# --- connected components -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(graph=graphs())
def test_components_equal_a_breadth_first_search(native_impl: SimpleNamespace, graph) -> None:
    n, src, dst = graph
    count, labels = native_impl.unionfind.connected_components(n, src, dst)
    expected = bfs_components(n, src, dst)
    assert count == len(expected)
    assert len(labels) == n
    found: dict[int, set[int]] = {}
    for node in range(n):
        found.setdefault(labels[node], set()).add(node)
    assert sorted(map(frozenset, found.values()), key=min) == expected
    # Components are numbered in the order of their smallest node.
    assert [labels[min(c)] for c in expected] == list(range(count))


@settings(max_examples=100, deadline=None)
@given(graph=graphs())
def test_union_find_agrees_with_connected_components(native_impl: SimpleNamespace, graph) -> None:
    n, src, dst = graph
    uf = native_impl.unionfind.UnionFind(n)
    for a, b in zip(src, dst, strict=True):
        uf.union(a, b)
    _, labels = native_impl.unionfind.connected_components(n, src, dst)
    for a in range(n):
        for b in range(n):
            assert uf.same(a, b) == (labels[a] == labels[b])


def test_labels_numbering_rule(native_impl: SimpleNamespace) -> None:
    count, labels = native_impl.unionfind.connected_components(7, [6, 5, 1, 3], [2, 4, 3, 5])
    # {0}, {1,3,4,5}, {2,6}: numbered by smallest node 0, 1, 2
    assert count == 3
    assert list(labels) == [0, 1, 2, 1, 1, 1, 2]
    assert isinstance(labels, array) and labels.typecode == "I"
    assert native_impl.unionfind.connected_components(0, [], []) == (0, array("I"))
    assert tuple(native_impl.unionfind.connected_components(3, [], [])[1]) == (0, 1, 2)


EDGES = ([0, 2, 4, 7], [1, 3, 2, 8])
EXPECTED = (5, [0, 0, 1, 1, 1, 2, 3, 4, 4])


@pytest.mark.parametrize(
    "convert",
    [
        lambda v: array("I", v),
        lambda v: memoryview(array("I", v)),
        lambda v: memoryview(bytes(array("I", v))).cast("I"),  # read-only buffer
        lambda v: array("i", v),
        lambda v: array("q", v),
        lambda v: array("L", v),
        lambda v: array("H", v),  # no fast path: read as a sequence
        list,
        tuple,
        iter,
    ],
    ids=["I", "memoryview", "readonly", "i", "q", "L", "H", "list", "tuple", "iter"],
)
def test_buffer_and_sequence_inputs(native_impl: SimpleNamespace, convert) -> None:
    count, labels = native_impl.unionfind.connected_components(9, *map(convert, EDGES))
    assert (count, list(labels)) == EXPECTED


@pytest.mark.parametrize("kind", ["I", "q", "list"])
def test_edges_out_of_range_raise_index_error(native_impl: SimpleNamespace, kind: str) -> None:
    def convert(values: list[int]):
        return list(values) if kind == "list" else array(kind, values)

    cc = native_impl.unionfind.connected_components
    with pytest.raises(IndexError):
        cc(3, convert([0, 1]), convert([1, 3]))
    if kind != "I":
        with pytest.raises(IndexError):
            cc(3, convert([0, -1]), convert([1, 2]))


def test_edge_lists_of_different_lengths_raise_value_error(native_impl: SimpleNamespace) -> None:
    cc = native_impl.unionfind.connected_components
    with pytest.raises(ValueError):
        cc(3, [0, 1], [1])
    with pytest.raises(ValueError):
        cc(3, array("I", [0, 1]), array("I", [1]))


def test_a_larger_random_graph_matches_the_twin(compiled: SimpleNamespace) -> None:
    import random

    from idlink._native import _unionfind_py as twin

    rng = random.Random(5)
    n, m = 20_000, 15_000
    src = array("I", (rng.randrange(n) for _ in range(m)))
    dst = array("I", (rng.randrange(n) for _ in range(m)))
    assert compiled.unionfind.connected_components(n, src, dst) == twin.connected_components(
        n, src, dst
    )
