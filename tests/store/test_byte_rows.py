"""Byte strings through a uint8 matrix and back (the bulk load's rows)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from idlink.store.bulk import byte_matrix, split_rows


@given(st.integers(0, 40).flatmap(lambda w: st.lists(st.binary(min_size=w, max_size=w))))
def test_rows_come_back_as_they_went_in(values: list[bytes]) -> None:
    matrix = byte_matrix(values)
    assert matrix is not None
    assert split_rows(matrix) == values


@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1), st.data())
def test_a_selection_of_rows_keeps_trailing_zero_bytes(
    values: list[bytes], data: st.DataObject
) -> None:
    values = [v[:-2] + b"\0\0" for v in values]
    picked = data.draw(st.lists(st.integers(0, len(values) - 1)))
    matrix = byte_matrix(values)
    assert matrix is not None
    joined = np.concatenate([matrix[picked], matrix[picked]], axis=1)
    assert split_rows(joined) == [values[i] * 2 for i in picked]


def test_unequal_lengths_have_no_matrix() -> None:
    assert byte_matrix([b"ab", b"abc"]) is None
