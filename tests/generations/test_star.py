"""Large-star / small-star (Kiveris et al.) in DuckDB SQL: the star forest and its rounds."""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from idlink.generations.duckdb_engine import large_small_star


def stars(src: list[int], dst: list[int]) -> tuple[dict[int, int], int]:
    with duckdb.connect() as connection:
        rounds = large_small_star(connection, pa.table({"src": src, "dst": dst}))
        rows = connection.execute("SELECT a, b FROM edges").fetchall()
    return dict(rows), rounds


def test_a_long_path_needs_rounds_and_ends_as_one_star_around_its_smallest_node():
    nodes = list(range(64))
    random.Random(7).shuffle(nodes)  # a path through the ids in a random order
    star, rounds = stars(nodes[:-1], nodes[1:])
    assert rounds >= 2
    assert star == {n: 0 for n in range(1, 64)}  # every node once, to the smallest


def test_record_stars_that_are_already_a_star_forest_need_no_round():
    star, rounds = stars([5, 6, 9], [1, 1, 2])
    assert rounds == 0
    assert star == {5: 1, 6: 1, 9: 2}


@pytest.mark.parametrize("seed", range(5))
def test_random_graphs_give_scipys_components(seed):
    rng = np.random.default_rng(seed)
    n = 300
    src = rng.integers(0, n, 260)
    dst = rng.integers(0, n, 260)
    star, _ = stars(src.tolist(), dst.tolist())
    labels = np.arange(n)
    for node, root in star.items():
        labels[node] = root
    matrix = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)).tocsr()
    _, expected = connected_components(matrix, directed=False)
    pairs = set(zip(labels.tolist(), expected.tolist(), strict=True))
    assert len(pairs) == len(set(labels.tolist())) == len(set(expected.tolist()))
    # Each label is its component's smallest node.
    for root in set(labels.tolist()):
        assert root == min(np.flatnonzero(labels == root))
