"""Blocked-value patterns, matched in time linear in the value (SPEC 2.4).

Resolves run on the event loop and every resolve matches the key type's
blocked patterns, so a pattern is user-supplied work done for every tenant. A
backtracking engine (Python's ``re``) needs 2^n steps for ``^(a+)+$`` on
``"a" * n + "b"``; RE2 (the ``google-re2`` binding) never backtracks, so a
match costs time linear in the value whatever the pattern. The price is
RE2's syntax: no backreferences, no lookaround, no atomic groups or possessive
repeats. ``PutKeyType`` refuses those with the reason (``validate_blocked``).

Patterns stored before RE2 was used are not refused when an account loads
(``compile_blocked``): the one the product wrote itself, the old default phone
pattern ``^\\+?(\\d)\\1*$``, runs as its RE2 equivalent; any other pattern
RE2 refuses keeps Python's ``re`` when its shape cannot backtrack badly (so
the verdicts the stored customers were built with do not change), and
otherwise blocks every value of its key type (a placeholder must never glue
strangers together; the contacts come back when an admin sends an RE2
pattern, which works the account out again). docs/api.md says the same.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import re2

from idlink.errors import InvalidArgument

log = logging.getLogger(__name__)

FIELD = "key_type.blocked_patterns"
REASON = "BLOCKED_PATTERN_UNSUPPORTED"
MAX_BLOCKED_PATTERNS = 32
MAX_PATTERN_CHARS = 256
# RE2 refuses to compile a pattern whose program would need more memory than this.
MAX_PATTERN_MEMORY = 2 << 20

ENGINE_RE2 = "re2"
ENGINE_LEGACY = "re"
ENGINE_BLOCK_ALL = "blocks every value"

# One repeated digit: the old default phone pattern said it with a backreference.
REPEATED_DIGIT = r"^\+?(?:0+|1+|2+|3+|4+|5+|6+|7+|8+|9+)$"
# Patterns idlink itself stored before RE2, and what RE2 runs for them (same verdicts).
EQUIVALENTS = {r"^\+?(\d)\1*$": REPEATED_DIGIT}

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the refusal is the caller's answer, not a server log line
_OPTIONS.max_mem = MAX_PATTERN_MEMORY

# What RE2's parser says, and what to tell the admin instead.
_WHY = (
    (re.compile(r"invalid escape sequence: \\[1-9g]"), "uses a backreference"),
    (re.compile(r"invalid perl operator: \(\?P$"), "uses a backreference"),
    (re.compile(r"invalid perl operator: \(\?<?[=!]"), "uses lookaround"),
    (re.compile(r"invalid perl operator: \(\?>"), "uses an atomic group"),
    (re.compile(r"bad repetition operator: \S*[*+?}]\+$"), "uses a possessive repeat"),
    (re.compile(r"pattern too large"), "is too large to compile"),
)
_LINEAR_ONLY = (
    "blocked patterns are matched with RE2, in time linear in the value, which has "
    "no backreferences, lookaround, atomic groups or possessive repeats"
)


def _re2(pattern: str) -> Any:
    return re2.compile(EQUIVALENTS.get(pattern, pattern), _OPTIONS)


def _refusal(index: int, pattern: str, error: re2.error) -> InvalidArgument:
    said = error.args[0].decode("utf-8", "replace") if error.args else str(error)
    where = f"{FIELD}[{index}] {pattern!r}"
    for parsed, why in _WHY:
        if parsed.search(said):
            return InvalidArgument(
                f"{where} {why} ({said}): {_LINEAR_ONLY}", field=FIELD, reason=REASON
            )
    return InvalidArgument(
        f"{where} is not a regular expression RE2 accepts: {said}", field=FIELD, reason=REASON
    )


def validate_blocked(patterns: Sequence[str]) -> None:
    """Refuse blocked patterns RE2 cannot run, and more or longer ones than the bounds."""
    if len(patterns) > MAX_BLOCKED_PATTERNS:
        raise InvalidArgument(
            f"{FIELD} has {len(patterns)} patterns; a key type has at most {MAX_BLOCKED_PATTERNS}",
            field=FIELD,
        )
    for index, pattern in enumerate(patterns):
        if not pattern:
            raise InvalidArgument(
                f"{FIELD}[{index}] is empty: it would block every value of the key type",
                field=FIELD,
            )
        if len(pattern) > MAX_PATTERN_CHARS:
            raise InvalidArgument(
                f"{FIELD}[{index}] has {len(pattern)} characters; at most {MAX_PATTERN_CHARS}",
                field=FIELD,
            )
        try:
            _re2(pattern)
        except re2.error as exc:
            raise _refusal(index, pattern, exc) from None


class BlockedPatterns:
    """The compiled blocked patterns of one key type."""

    __slots__ = ("blocks_all", "compiled", "engines", "matchers", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        compiled: list[Any] = []
        engines: list[str] = []
        for pattern in patterns:
            matcher, engine = _compile_stored(pattern)
            compiled.append(matcher)
            engines.append(engine)
        self.compiled = tuple(compiled)
        self.engines = tuple(engines)
        self.blocks_all = ENGINE_BLOCK_ALL in engines
        # Each call into the RE2 binding costs a few microseconds whatever the
        # pattern, and every contact of an ingest is checked: the RE2 patterns
        # run as one alternation, one call per value. Each keeps its flags
        # ("(?i)") inside its own group.
        ours = [
            EQUIVALENTS.get(p, p) for p, e in zip(patterns, engines, strict=True) if e == ENGINE_RE2
        ]
        legacy = [m for m, e in zip(compiled, engines, strict=True) if e == ENGINE_LEGACY]
        joined = None
        if len(ours) > 1:
            try:
                joined = re2.compile("|".join(f"(?:{p})" for p in ours), _OPTIONS)
            except re2.error:  # too large together, or a group name used twice
                joined = None
        if joined is not None:
            self.matchers = (joined, *legacy)
        else:
            self.matchers = tuple(m for m in compiled if m is not None)

    def search(self, cleaned: str) -> bool:
        """Whether any pattern matches somewhere in the cleaned value."""
        return self.blocks_all or any(m.search(cleaned) is not None for m in self.matchers)

    def search_many(self, values: Sequence[str]) -> list[bool]:
        """:meth:`search` of each value, the RE2 patterns run over all values in one call.

        For a bulk load's distinct values: the RE2 patterns (one alternation)
        go through Arrow's RE2 kernel (``match_substring_regex``, RE2's
        unanchored search, as ``search`` runs them) when pyarrow is installed
        and takes them; a pattern kept on Python's ``re`` is searched value by
        value; without pyarrow, or when Arrow refuses the pattern or the
        values, every value goes through :meth:`search`. Same verdicts.
        """
        if self.blocks_all:
            return [True] * len(values)
        if not values:
            return []
        found = self._arrow_search(values)
        if found is None:
            return [self.search(v) for v in values]
        legacy = [m for m, e in zip(self.compiled, self.engines, strict=True) if e == ENGINE_LEGACY]
        if legacy:
            found = [
                hit or any(m.search(v) is not None for m in legacy)
                for hit, v in zip(found, values, strict=True)
            ]
        return found

    def _arrow_search(self, values: Sequence[str]) -> list[bool] | None:
        """The RE2 patterns' verdicts through Arrow (None: not available for these)."""
        ours = [
            EQUIVALENTS.get(p, p)
            for p, e in zip(self.patterns, self.engines, strict=True)
            if e == ENGINE_RE2
        ]
        if not ours:
            return [False] * len(values)
        try:
            import pyarrow as pa
            import pyarrow.compute as pc
        except ImportError:
            return None
        try:
            column = pa.array(values, pa.string())
            hits = None
            # One alternation when RE2 takes it together (as __init__ does), else one each.
            together = len(self.matchers) == 1 + sum(e == ENGINE_LEGACY for e in self.engines)
            groups = ["|".join(f"(?:{p})" for p in ours)] if together or len(ours) == 1 else ours
            for pattern in groups:
                matched = pc.match_substring_regex(column, pattern=pattern)
                hits = matched if hits is None else pc.or_(hits, matched)
        except (pa.ArrowException, TypeError, ValueError, UnicodeError):
            return None
        assert hits is not None
        result: list[bool] = hits.to_pylist()
        return result


@functools.lru_cache(maxsize=1024)
def compile_blocked(patterns: tuple[str, ...]) -> BlockedPatterns:
    """Compile a key type's blocked patterns once (equal pattern lists share one compilation)."""
    return BlockedPatterns(patterns)


def _compile_stored(pattern: str) -> tuple[Any, str]:
    """A matcher for a stored pattern (None: blocks every value) and the engine that runs it."""
    try:
        return _re2(pattern), ENGINE_RE2
    except re2.error:
        pass
    # Only an earlier version can have stored this (PutKeyType refuses it now).
    try:
        legacy = re.compile(pattern)
    except re.error:
        legacy = None
    if legacy is not None and _cannot_backtrack_badly(pattern):
        log.warning(
            "blocked pattern %r is not RE2; it keeps Python's re until the key type is sent "
            "again with an RE2 pattern",
            pattern,
        )
        return legacy, ENGINE_LEGACY
    log.warning(
        "blocked pattern %r is not RE2 and could backtrack without bound: it blocks every "
        "value of its key type until the key type is sent again with an RE2 pattern",
        pattern,
    )
    return None, ENGINE_BLOCK_ALL


_REPEATS = {
    sre_parse.MAX_REPEAT,
    sre_parse.MIN_REPEAT,
    getattr(sre_parse, "POSSESSIVE_REPEAT", None),
}


def _cannot_backtrack_badly(pattern: str) -> bool:
    """Whether a pattern has at most two repeats, none inside another or around a choice.

    Catastrophic backtracking needs a repeat whose body can match the same
    text in more than one way (a repeat or an alternation inside it), or many
    repeats side by side (n^k steps for k of them). On values of at most 512
    bytes, two side by side cost at most about 2^18 steps.
    """
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - an unparsable pattern is not shown safe
        return False
    repeats = 0

    def walk(node: Any, inside_repeat: bool) -> bool:
        nonlocal repeats
        for op, av in node:
            if op in _REPEATS:
                _, most, body = av
                if most > 1:
                    if inside_repeat:
                        return False
                    repeats += 1
                    if not walk(body, True):
                        return False
                    continue
            if op == sre_parse.BRANCH and inside_repeat:
                return False
            for part in av if isinstance(av, tuple | list) else (av,):
                children = part if isinstance(part, list) else [part]
                for child in children:
                    if isinstance(child, sre_parse.SubPattern) and not walk(child, inside_repeat):
                        return False
        return True

    return walk(parsed, False) and repeats <= 2
