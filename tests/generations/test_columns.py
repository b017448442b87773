"""The whole-column helpers give what numpy and pyarrow give, on every path they take."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from idlink.generations.columns import (
    byte_order,
    canonical_keys,
    lex_order,
    pid_list,
    record_id_keys,
    time_keys,
)
from idlink.store import codec


@st.composite
def key_sets(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """One to four keys of one length: small ranges with ties, negatives, bools, huge ranges."""
    size = draw(st.integers(0, 60))
    count = draw(st.integers(1, 4))
    keys = []
    for _ in range(count):
        kind = draw(st.sampled_from(["small", "negative", "bool", "huge", "uint"]))
        if kind == "bool":
            keys.append(draw(hnp.arrays(np.bool_, size)))
        elif kind == "uint":
            keys.append(draw(hnp.arrays(np.uint32, size)))
        else:
            bound = {"small": (0, 3), "negative": (-5, 5), "huge": (-(2**62), 2**62)}[kind]
            keys.append(draw(hnp.arrays(np.int64, size, elements=st.integers(*bound))))
    return tuple(keys)


@settings(max_examples=300, deadline=None)
@given(key_sets())
def test_lex_order_is_lexsort(keys: tuple[np.ndarray, ...]) -> None:
    assert lex_order(keys).tolist() == np.lexsort(keys).tolist()


@pytest.mark.parametrize("size", [1_000, 200_000])
def test_lex_order_is_lexsort_on_each_path(size: int) -> None:
    rng = np.random.default_rng(size)
    # The index fits beside the keys; the keys fit only alone (stable sort); nothing fits.
    narrow = (rng.integers(0, 50, size), rng.integers(0, 50, size))
    # Wide ranges with only four distinct rows: the index no longer fits, and ties abound.
    wide = (rng.integers(0, 2, size), np.where(rng.random(size) < 0.5, 0, 2**50))
    too_wide = (rng.integers(0, 2**40, size), rng.integers(0, 2**40, size))
    for keys in (narrow, wide, too_wide):
        assert np.array_equal(lex_order(keys), np.lexsort(keys))


def test_lex_order_needs_a_key() -> None:
    with pytest.raises(ValueError):
        lex_order(())


def test_pid_list_is_to_pylist_for_fixed_and_plain_binary() -> None:
    pids = [os.urandom(16) for _ in range(100)] + [b"\0" * 16]
    fixed = pa.array(pids, pa.binary(16))
    assert pid_list(fixed) == pids
    assert pid_list(pa.chunked_array([fixed[:50], fixed[50:]])) == pids
    assert pid_list(pa.array(pids, pa.binary())) == pids
    assert pid_list(fixed.slice(3, 10)) == pids[3:13]


_TEXT = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), _TEXT, _TEXT),
        max_size=40,
    ),
    st.integers(1, 3),
)
def test_record_keys_are_codecs_a_column_at_a_time(
    rows: list[tuple[int, str, str]], chunks: int
) -> None:
    """Every timestamp (the extremes too), any text, a column of several chunks."""
    observed = np.array([o for o, _, _ in rows], np.int64)
    cut = len(rows) // chunks

    def column(values: list[str]) -> pa.ChunkedArray:
        parts = [values[i * cut : (i + 1) * cut] for i in range(chunks - 1)]
        parts.append(values[(chunks - 1) * cut :])
        return pa.chunked_array([pa.array(part, pa.string()) for part in parts], pa.string())

    sources, ids = column([s for _, s, _ in rows]), column([r for _, _, r in rows])
    times = time_keys(observed)
    assert [bytes(row) for row in times] == [codec.time_key(o) for o, _, _ in rows]
    id_keys = record_id_keys(sources, ids)
    assert id_keys.to_pylist() == [codec.record_id_key(s, r) for _, s, r in rows]
    assert canonical_keys(times, id_keys) == [codec.canonical_key(*row) for row in rows]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 20).flatmap(
        lambda width: st.lists(
            st.binary(min_size=width, max_size=width)
            | st.builds(
                lambda tail: bytes(max(0, width - len(tail))) + tail, st.binary(max_size=2)
            ).map(lambda b, w=width: b[:w].ljust(w, b"\0")),
            max_size=30,
        ).map(lambda values, w=width: (w, values))
    )
)
def test_byte_order_is_a_stable_sort_of_the_rows(case: tuple[int, list[bytes]]) -> None:
    """Random rows and rows tied in their first bytes (zeros with a short tail), any width."""
    width, values = case
    matrix = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), width)
    expected = sorted(range(len(values)), key=lambda i: values[i])
    assert byte_order(matrix).tolist() == expected
