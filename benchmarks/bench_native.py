"""Compiled hot paths against scipy, bare hashlib and their pure-Python twins."""

from __future__ import annotations

import hashlib
import random
from array import array

from benchmarks.report import Entry, entry, median_rate
from idlink._native import _contacts_c, _contacts_py, _unionfind_c, _unionfind_py


def random_graph(nodes: int, edges: int, seed: int = 7) -> tuple[array, array]:
    rng = random.Random(seed)
    src = array("I", (rng.randrange(nodes) for _ in range(edges)))
    dst = array("I", (rng.randrange(nodes) for _ in range(edges)))
    return src, dst


def bench_union_find(edge_counts: list[int], repeats: int) -> list[Entry]:
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    out = []
    for edges in edge_counts:
        nodes = edges // 2
        src, dst = random_graph(nodes, edges)
        matrix = coo_matrix(
            (
                np.ones(edges, dtype=np.int8),
                (np.frombuffer(src, np.uint32), np.frombuffer(dst, np.uint32)),
            ),
            shape=(nodes, nodes),
        ).tocsr()
        compiled = median_rate(
            lambda: (_unionfind_c.connected_components(nodes, src, dst), edges)[1], repeats
        )
        floor = median_rate(
            lambda: (connected_components(matrix, directed=False), edges)[1], repeats
        )
        label = f"{edges / 1e6:g}M" if edges >= 1_000_000 else f"{edges // 1000}k"
        out.append(
            entry(
                f"union-find {label} edges, compiled vs scipy",
                compiled,
                "edges/s",
                "scipy connected_components (prebuilt CSR)",
                floor,
                target=3.0,
            )
        )
        py_edges = min(edges, 1_000_000)
        py_src, py_dst = src[:py_edges], dst[:py_edges]
        twin = median_rate(
            lambda: (_unionfind_py.connected_components(nodes, py_src, py_dst), py_edges)[1], 1
        )
        out.append(
            entry(
                f"union-find {label} edges, compiled vs pure Python",
                compiled,
                "edges/s",
                "pure-Python twin",
                twin,
                target=25.0,
            )
        )
    return out


def bench_contacts(count: int, repeats: int) -> list[Entry]:
    rng = random.Random(3)
    codes = ["+1", "+44", "+49", "+33", "+420", "+91", "+61", "+81", "+55", "+234"]
    phones = [f"{rng.choice(codes)} {rng.randrange(10**8, 10**10)}" for _ in range(count)]
    emails = [f"User.{i}@Example{rng.randrange(100)}.com " for i in range(count)]
    secret = b"s" * 32
    out = []
    for kind, normalizer, values, target in (
        ("phones", _contacts_c.NORMALIZER_PHONE, phones, 20.0),
        ("emails", _contacts_c.NORMALIZER_EMAIL, emails, 3.0),
    ):

        def compiled(values=values, normalizer=normalizer) -> int:
            for v in values:
                _contacts_c.prepare(secret, normalizer, kind, "", v)
            return len(values)

        def twin(values=values, normalizer=normalizer) -> int:
            for v in values:
                _contacts_py.prepare(secret, normalizer, kind, "", v)
            return len(values)

        def bare(values=values) -> int:
            for v in values:
                hashlib.blake2b(v.encode(), digest_size=16, key=secret).digest()
            return len(values)

        # Warm up: the phone table is built from phonenumbers' metadata on first use.
        _contacts_c.prepare(secret, normalizer, kind, "", values[0])
        _contacts_py.prepare(secret, normalizer, kind, "", values[0])
        c_rate = median_rate(compiled, repeats)
        out.append(
            entry(
                f"clean+validate+hash {kind}, compiled vs pure Python",
                c_rate,
                "contacts/s",
                "pure-Python twin (phonenumbers for each phone)",
                median_rate(twin, repeats),
                target=target,
            )
        )
        out.append(
            entry(
                f"clean+validate+hash {kind}, compiled vs bare hashlib",
                c_rate,
                "contacts/s",
                "bare keyed blake2b, no clean-up",
                median_rate(bare, repeats),
            )
        )
    return out
