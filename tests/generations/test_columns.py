"""The whole-column helpers give what numpy and pyarrow give, on every path they take."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from idlink.generations.columns import lex_order, pid_list


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
