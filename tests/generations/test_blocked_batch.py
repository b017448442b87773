"""Blocked patterns matched in batch (a load's distinct values) give search's verdicts exactly."""

from __future__ import annotations

import builtins
import random

import pytest

from idlink.domain import patterns
from idlink.domain.keytypes import DEFAULT_PHONE_BLOCKED_PATTERNS, NORMALIZER_TRIM, KeyType
from idlink.domain.patterns import BlockedPatterns
from idlink.generations.records_file import BLOCKED, _mark_blocked

PATTERN_SETS = [
    DEFAULT_PHONE_BLOCKED_PATTERNS,
    (r"^\+?(\d)\1*$",),  # the stored legacy default, run as its RE2 equivalent
    ("(?i)^test", r"@example\.(com|org)$", "^$"),
    ("é+", "漢", r"\d{3}-\d{4}"),
    ("(?P<x>a)b", "(?P<x>c)d"),  # one group name twice: RE2 cannot join them
    (r"(a)\1",),  # not RE2; kept on Python's re (a shape that cannot backtrack badly)
    (r"(a)\1", "zz"),
    (r"^(a+)+\1$",),  # not RE2 and could backtrack: blocks every value
    ("x",),
]


def _values(rng: random.Random) -> list[str]:
    alphabet = "aAbcdzZ+0123456789-@.eéx漢 TESTtest"
    out = ["", "+0000", "+1111111", "111", "aa", "ab", "cd", "test@example.com", "Test", "555-1234"]
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(3000)]
    return out


@pytest.mark.parametrize("stored", PATTERN_SETS, ids=range(len(PATTERN_SETS)))
def test_search_many_gives_the_verdicts_of_search(stored):
    compiled = BlockedPatterns(stored)
    values = _values(random.Random(hash(stored) & 0xFFFF))
    expected = [compiled.search(v) for v in values]
    assert compiled.search_many(values) == expected
    assert compiled.search_many([]) == []


def test_search_many_without_pyarrow_searches_value_by_value(monkeypatch):
    compiled = BlockedPatterns(DEFAULT_PHONE_BLOCKED_PATTERNS)
    values = ["+0000", "+14155550100", "+777"]
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    calls = []
    search = compiled.search
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.setattr(
        BlockedPatterns, "search", lambda self, v: calls.append(v) or search(v), raising=True
    )
    assert compiled.search_many(values) == [True, False, True]
    assert calls == values


def test_values_arrow_cannot_take_fall_back_to_search():
    compiled = BlockedPatterns(("a",))
    assert compiled.search_many(["a", "b"]) == [True, False]
    # A lone surrogate is not UTF-8: Arrow refuses the column, and search refuses the value.
    with pytest.raises(UnicodeEncodeError):
        compiled.search("b\ud800")
    with pytest.raises(UnicodeEncodeError):
        compiled.search_many(["a", "b\ud800"])


def test_marking_a_group_blocked_in_batch_equals_is_blocked_per_value():
    key_type = KeyType(
        "handle",
        NORMALIZER_TRIM,
        blocked_values=("unknown", "n/a"),
        blocked_patterns=("(?i)^test", r"(a)\1"),
    )
    rng = random.Random(7)
    values = _values(rng) + ["unknown", "n/a", "aa"]
    prepared = [
        (v, "" if i % 5 else "INVALID_FORMAT", bytes([i % 256]) * 16) for i, v in enumerate(values)
    ]
    expected = [
        (v, patterns_reason, pid)
        for v, reason, pid in prepared
        for patterns_reason in [BLOCKED if not reason and key_type.is_blocked(v) else reason]
    ]
    assert _mark_blocked(key_type, prepared) == expected
    assert sum(r == BLOCKED for _, r, _ in expected) > 10
    assert patterns.compile_blocked(key_type.blocked_patterns).engines[1] == patterns.ENGINE_LEGACY
