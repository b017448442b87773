"""Blocked-value patterns are matched by RE2, never by a backtracking engine (SPEC 2.4)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlink.domain import patterns
from idlink.domain.keytypes import NORMALIZER_PHONE, KeyType, default_key_types
from idlink.errors import InvalidArgument

EXPONENTIAL = r"^(a+)+$"  # 2^n steps for a backtracking engine on "a" * n + "b"
LEGACY_PHONE_DEFAULT = r"^\+?(\d)\1*$"  # the default phone pattern before RE2


def refusal(*blocked: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        KeyType("membership_id", blocked_patterns=blocked).validate()
    assert caught.value.field == "key_type.blocked_patterns"
    return caught.value


# --- the engine -----------------------------------------------------------------------------


def test_blocked_patterns_are_compiled_with_re2() -> None:
    compiled = patterns.compile_blocked((EXPONENTIAL, "^null$"))
    assert compiled.engines == ("re2", "re2")
    assert all(type(p).__module__.startswith("re2") for p in compiled.compiled)


def test_an_exponential_pattern_answers_at_once() -> None:
    # A backtracking engine needs about a minute for this value (2^30 steps) and
    # holds the GIL all along, so the match runs in a child process with a
    # generous bound instead of a thread of this one.
    script = textwrap.dedent(
        f"""
        from idlink.domain.keytypes import KeyType
        key_type = KeyType("membership_id", blocked_patterns=({EXPONENTIAL!r},))
        key_type.validate()
        print(key_type.is_blocked("a" * 30 + "b"), key_type.is_blocked("a" * 30))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_compiled_patterns_are_cached_per_key_type() -> None:
    key_type = KeyType("membership_id", blocked_patterns=("^x+$",))
    assert key_type.is_blocked("xxx") and not key_type.is_blocked("xy")
    assert key_type._compiled is key_type._compiled
    # Equal pattern lists (another config version of the same account) share one compilation.
    again = KeyType("membership_id", blocked_patterns=("^x+$",))
    assert again._compiled is key_type._compiled


# --- what PutKeyType refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"^(\d)\1+$", "backreference"),
        (r"(?P<d>\d)(?P=d)", "backreference"),
        (r"^(?!test).*@corp\.example$", "lookaround"),
        (r"(?<=x)y", "lookaround"),
        (r"(?=a)a", "lookaround"),
        (r"(?>a+)b", "atomic"),
        (r"a++", "possessive"),
        (r"(unclosed", "missing )"),
        (r"x{2000}", "repetition"),
        (r"[\p{L}\p{N}]{1,200}", "too large"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern: str, why: str) -> None:
    error = refusal(pattern)
    assert why in error.message
    assert repr(pattern) in error.message
    assert error.reason == "BLOCKED_PATTERN_UNSUPPORTED"


def test_the_refusal_names_the_position_of_the_pattern() -> None:
    assert "key_type.blocked_patterns[2]" in refusal("^null$", "^none$", r"(a)\1").message


def test_pattern_length_and_count_are_bounded() -> None:
    longest = "x" * patterns.MAX_PATTERN_CHARS
    KeyType("t", blocked_patterns=(longest,)).validate()
    assert "characters" in refusal(longest + "x").message
    many = tuple(f"^v{i}$" for i in range(patterns.MAX_BLOCKED_PATTERNS))
    KeyType("t", blocked_patterns=many).validate()
    assert str(patterns.MAX_BLOCKED_PATTERNS) in refusal(*many, "^one-more$").message


def test_an_empty_pattern_is_refused_because_it_would_block_every_value() -> None:
    assert "every value" in refusal("").message


# --- the default phone patterns -------------------------------------------------------------


@pytest.mark.parametrize(
    ("cleaned", "blocked"),
    [
        ("0000000", True),
        ("+0000000", True),
        ("+", False),
        ("5555555", True),
        ("+77777777777", True),
        ("999999999999999", True),
        ("+15551234567", False),
        ("5551234567", False),
        ("+11111111112", False),
        ("12", False),
    ],
)
def test_default_phone_patterns_still_block_fillers(cleaned: str, blocked: bool) -> None:
    phone = default_key_types()["phone"]
    phone.validate()
    assert patterns.compile_blocked(phone.blocked_patterns).engines == ("re2", "re2")
    assert phone.is_blocked(cleaned) is blocked


@settings(max_examples=300, deadline=None)
@given(cleaned=st.from_regex(r"\A\+?[0-9]{0,16}\Z") | st.text("+0123456789", max_size=16))
def test_default_phone_patterns_agree_with_the_old_backtracking_ones(cleaned: str) -> None:
    old = [re.compile(r"^\+?0+$"), re.compile(LEGACY_PHONE_DEFAULT)]
    expected = any(p.search(cleaned) for p in old)
    assert default_key_types()["phone"].is_blocked(cleaned) is expected


def test_the_old_default_phone_pattern_is_accepted_and_run_by_re2() -> None:
    # An account created earlier stores it; listing its key types and sending
    # them back must keep working, with the same verdicts.
    phone = KeyType("phone", NORMALIZER_PHONE, blocked_patterns=(r"^\+?0+$", LEGACY_PHONE_DEFAULT))
    phone.validate()
    assert patterns.compile_blocked(phone.blocked_patterns).engines == ("re2", "re2")
    assert phone.is_blocked("+4444444") and not phone.is_blocked("+4444445")


# --- patterns stored before RE2 -------------------------------------------------------------


def test_a_stored_pattern_re2_refuses_keeps_its_verdicts_when_it_is_linear() -> None:
    # Stored by an earlier version (validation ran with Python's re then): it is
    # not refused at load, and its verdicts do not change under the stored customers.
    compiled = patterns.compile_blocked((r"^(\w)\1{3,}$", "^null$"))
    assert compiled.engines == ("re", "re2")
    assert compiled.search("zzzz") and compiled.search("null") and not compiled.search("zzzy")


@pytest.mark.parametrize("stored", [r"^(a+)+\1$", r"^(?=x)(a|a)*$", r"(\d)\1*a*b*c*$"])
def test_a_stored_pattern_that_could_backtrack_blocks_every_value(stored: str) -> None:
    # Failing closed: the type's contacts stop linking (reason BLOCKED, visible
    # at once) until an admin sends an RE2 pattern; wrong merges never happen.
    compiled = patterns.compile_blocked((stored,))
    assert compiled.engines == ("blocks every value",)
    assert compiled.search("a" * 30 + "b") and compiled.search("anything")


# --- RE2 gives Python's verdicts on the patterns the SPEC names --------------------------------

SPEC_PATTERNS = ("null", "anonymous", r"^[0-]*$", r"noemail@.*", r"(?i)^n/?a$", r"^\+?0+$")


@settings(max_examples=300, deadline=None)
@given(value=st.text(st.sampled_from("nulaoymiesN/A@.0-+x \u00e9"), max_size=20))
def test_re2_and_python_agree_on_the_spec_patterns(value: str) -> None:
    compiled = patterns.compile_blocked(SPEC_PATTERNS)
    assert compiled.search(value) is any(re.search(p, value) for p in SPEC_PATTERNS)


# --- one call for all the RE2 patterns of a key type ------------------------------------------

POOL = (
    "null",
    r"^\+?0+$",
    r"(?i)^n/?a$",
    r"^x",
    r"y$",
    r"(?i)TEST",
    r"^(?P<d>[0-9])[0-9]*$",
    r"^\+?(\d)\1*$",
    r"^$|^-+$",
    r"\bnone\b",
)


@settings(max_examples=300, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(POOL), min_size=1, max_size=5, unique=True),
    value=st.text(st.sampled_from("nulaNAtesTx/y0123+-"), max_size=12),
)
def test_the_patterns_together_give_each_pattern_s_verdict(chosen, value) -> None:
    # Flags stay inside their own pattern: (?i) of one never makes another case-blind.
    compiled = patterns.compile_blocked(tuple(chosen))
    expected = any(
        patterns.compile_blocked((p,)).compiled[0].search(value) is not None for p in chosen
    )
    assert compiled.search(value) is expected


def test_the_patterns_together_fall_back_to_one_call_each_when_they_do_not_join() -> None:
    # Each pattern fits RE2's memory bound alone, not both together.
    big = r"^[\p{L}\p{N}]{1,100}"
    KeyType("t", blocked_patterns=(big, big + "x")).validate()
    compiled = patterns.compile_blocked((big + "$", big + "x$"))
    assert len(compiled.matchers) == 2
    assert compiled.search("ab1") and compiled.search("abx") and not compiled.search("ab-")
    assert len(patterns.compile_blocked(("^a$", "^b$", "^c$")).matchers) == 1
