"""Connection counting for the cluster cap (SPEC 3.3), on both implementations."""

from __future__ import annotations

from array import array
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

RECORDS = st.lists(st.lists(st.integers(0, 25), max_size=7), max_size=25)


def naive_pairs(records: list[list[int]]) -> set[frozenset[int]]:
    return {frozenset((a, b)) for record in records for a in record for b in record if a != b}


def naive_degree(pairs: set[frozenset[int]], x: int) -> int:
    return sum(x in pair for pair in pairs)


@settings(max_examples=200, deadline=None)
@given(records=RECORDS)
def test_counts_equal_a_naive_set_of_pairs(native_impl: SimpleNamespace, records) -> None:
    counter = native_impl.degree.ConnectionCounter()
    seen: list[list[int]] = []
    for record in records:
        before = naive_pairs(seen)
        seen.append(record)
        assert counter.add_record(record) == len(naive_pairs(seen) - before)
    pairs = naive_pairs(records)
    assert counter.pairs() == len(pairs)
    for x in range(27):
        assert counter.degree(x) == naive_degree(pairs, x)
        for y in range(27):
            assert counter.connected(x, y) == (frozenset((x, y)) in pairs)


@settings(max_examples=200, deadline=None)
@given(records=RECORDS, n_extra=st.integers(0, 3))
def test_count_connections_equals_a_naive_count(
    native_impl: SimpleNamespace, records, n_extra: int
) -> None:
    n = 26 + n_extra
    offsets, members = [0], []
    for record in records:
        members.extend(record)
        offsets.append(len(members))
    pairs = naive_pairs(records)
    expected = [naive_degree(pairs, x) for x in range(n)]
    count = native_impl.degree.count_connections
    assert list(count(n, offsets, members)) == expected
    assert list(count(n, array("I", offsets), array("I", members))) == expected
    assert list(count(n, array("q", offsets), array("i", members))) == expected


def test_self_pairs_and_duplicates_are_ignored(native_impl: SimpleNamespace) -> None:
    counter = native_impl.degree.ConnectionCounter()
    assert counter.add_record([4, 4, 4]) == 0
    assert counter.connect(4, 4) is False
    assert counter.connected(4, 4) is False
    assert counter.add_record([1, 2, 1, 2, 2]) == 1
    assert counter.add_record((2, 1)) == 0
    assert counter.connect(2, 1) is False
    assert counter.connect(1, 3) is True
    assert (counter.degree(1), counter.degree(2), counter.degree(3)) == (2, 1, 1)
    assert counter.degree(4) == 0
    assert counter.degree(10**6) == 0  # unknown ids have no connections
    assert counter.pairs() == 2


def test_placeholder_email_gets_one_connection_per_phone(native_impl: SimpleNamespace) -> None:
    # SPEC 3.3's example: 2,000 rows, each with its own phone and no@email.com.
    counter = native_impl.degree.ConnectionCounter()
    email = 0
    assert sum(counter.add_record([phone, email]) for phone in range(1, 2001)) == 2000
    assert counter.degree(email) == 2000
    assert counter.degree(1234) == 1


def test_large_and_sparse_ids(native_impl: SimpleNamespace) -> None:
    counter = native_impl.degree.ConnectionCounter()
    top = 2**32 - 1
    assert counter.connect(0, top)
    assert counter.add_record([5, top, 2**31]) == 3
    assert counter.degree(top) == 3
    assert counter.add_record(range(100, 110)) == 45
    assert counter.add_record([5, 3_000_000]) == 1
    assert counter.degree(5) == 3
    assert counter.degree(2**31) == 2
    assert counter.connected(top, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.add_record([1, -1]),
        lambda c: c.add_record([2**32]),
        lambda c: c.connect(0, 2**32),
        lambda c: c.connected(-1, 0),
        lambda c: c.degree(-5),
        lambda c: c.degree(2**64),
    ],
)
def test_ids_out_of_range_raise_value_error(native_impl: SimpleNamespace, call) -> None:
    counter = native_impl.degree.ConnectionCounter()
    with pytest.raises(ValueError):
        call(counter)
    assert counter.pairs() == 0  # a bad record changes nothing


def test_a_bad_record_changes_nothing(native_impl: SimpleNamespace) -> None:
    counter = native_impl.degree.ConnectionCounter()
    with pytest.raises(ValueError):
        counter.add_record([1, 2, 3, -1])
    assert counter.pairs() == 0
    assert counter.degree(1) == 0


@pytest.mark.parametrize(
    ("offsets", "members", "error"),
    [
        ([0, 3], [0, 1], ValueError),  # past the end
        ([2, 1], [0, 1], ValueError),  # decreasing
        ([-1, 1], [0, 1], ValueError),
        ([0, 2], [0, 5], IndexError),  # member not below n
        ([0, 2], [0, -1], IndexError),
    ],
)
def test_count_connections_checks_its_input(
    native_impl: SimpleNamespace, offsets, members, error
) -> None:
    with pytest.raises(error):
        native_impl.degree.count_connections(3, offsets, members)


def test_count_connections_edge_cases(native_impl: SimpleNamespace) -> None:
    count = native_impl.degree.count_connections
    assert list(count(3, [], [])) == [0, 0, 0]
    assert list(count(3, [0], [])) == [0, 0, 0]
    assert list(count(0, [0], [])) == []
    assert list(count(4, [1, 3], [3, 0, 2, 1])) == [1, 0, 1, 0]  # members outside records unused
    degrees = count(3, [0, 2, 4], [0, 1, 1, 0])
    assert isinstance(degrees, array) and degrees.typecode == "I"
    assert list(degrees) == [1, 1, 0]  # the same pair in two records counts once
