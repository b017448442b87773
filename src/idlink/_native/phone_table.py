"""Country calling code table for the compiled phone check (SPEC 2.2).

SPEC 2.2 lets `phonenumbers` decide whether a `+` number is possible:
`is_possible_number(parse(cleaned, None))`. A `parse` call costs tens of
microseconds, so the compiled `_contacts_c` module answers from this table
instead, and reproduces the library's verdict exactly for a `+digits` string:

1. the country calling code is the shortest 1-3 digit prefix that is a key of
   `COUNTRY_CODE_TO_REGION_CODE` (a leading 0 is never one); no code means
   not possible;
2. the national number is the rest, unless `parse` strips a national prefix
   from it (the *national prefix for parsing* pattern of the code's main
   region); when that pattern cannot match the first digit of the rest,
   nothing is stripped and step 3 follows at once;
3. the number is possible when the length of the national number is one of
   the general possible lengths or local-only lengths of that metadata.

When the pattern might match, `possible_number` replays the library's
stripping rule in Python (still far cheaper than `parse`), and anything this
module cannot prove equal (a prefix *transform* rule, metadata of an
unexpected shape, a string that is not `+digits`) is handed to
`phonenumbers` itself. The table is built from the installed library's own
metadata on first use, so it always agrees with the installed version.
"""

from __future__ import annotations

import functools
import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import phonenumberutil
from phonenumbers.phonemetadata import PhoneMetadata

# Values of phonenumberutil's private constants of the same names.
MIN_LENGTH_FOR_NSN = 2
MAX_LENGTH_FOR_NSN = 17
MAX_LENGTH_COUNTRY_CODE = 3
MAX_INPUT_STRING_LENGTH = 250

ALL_DIGITS = 0x3FF  # one bit per digit 0-9
_PLUS_DIGITS = re.compile(r"\+[0-9]*")

# Results of phonenumberutil._test_number_length, by name.
_IS_POSSIBLE = "IS_POSSIBLE"
_IS_POSSIBLE_LOCAL_ONLY = "IS_POSSIBLE_LOCAL_ONLY"
_TOO_SHORT = "TOO_SHORT"
_TOO_LONG = "TOO_LONG"
_INVALID_LENGTH = "INVALID_LENGTH"


class CountryEntry(NamedTuple):
    """What the possible-number check needs to know about one country calling code."""

    country_code: int
    region: str  # main region ("001" for non-geographic codes)
    possible_lengths: tuple[int, ...]  # general description, as the metadata lists them
    local_only_lengths: tuple[int, ...]
    national_prefix_for_parsing: re.Pattern[str] | None
    national_prefix_transform_rule: str | None
    national_number_pattern: re.Pattern[str] | None  # general description
    length_mask: int  # bit L set: a national number of L digits is possible or local-only
    prefix_first_digits: int  # bit d set: the prefix pattern may match a number starting with d
    exact: bool  # False: the table cannot stand in for phonenumbers for this code


def _digit_set(items: Any) -> int:
    """Return the digits an `IN` set of a parsed pattern accepts, as a bit mask."""
    mask = 0
    negate = False
    for op, av in items:
        if op is sre_constants.NEGATE:
            negate = True
        elif op is sre_constants.LITERAL:
            if 0x30 <= av <= 0x39:
                mask |= 1 << (av - 0x30)
        elif op is sre_constants.RANGE:
            lo, hi = av
            for d in range(10):
                if lo <= 0x30 + d <= hi:
                    mask |= 1 << d
        elif op is sre_constants.CATEGORY and av is sre_constants.CATEGORY_DIGIT:
            mask = ALL_DIGITS
        elif op is sre_constants.CATEGORY and av is sre_constants.CATEGORY_NOT_DIGIT:
            pass
        else:  # not analysed here (\w, \s, ...): any digit, negated or not
            return ALL_DIGITS
    return ALL_DIGITS & ~mask if negate else mask


def _first(items: Any) -> tuple[int, bool]:
    """Return (digits a match of this sequence may start with, whether it may match empty).

    Over-estimating is safe (it only sends more numbers down the slow path),
    so every construct not analysed here counts as "any digit, maybe empty".
    """
    first = 0
    for op, av in items:
        if op is sre_constants.LITERAL:
            digits, nullable = (1 << (av - 0x30) if 0x30 <= av <= 0x39 else 0), False
        elif op is sre_constants.NOT_LITERAL or op is sre_constants.ANY:
            digits, nullable = ALL_DIGITS, False
        elif op is sre_constants.IN:
            digits, nullable = _digit_set(av), False
        elif op is sre_constants.BRANCH:
            digits, nullable = 0, False
            for branch in av[1]:
                d, n = _first(branch)
                digits |= d
                nullable = nullable or n
        elif op is sre_constants.SUBPATTERN:
            digits, nullable = _first(av[-1])
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            digits, nullable = _first(av[2])
            nullable = nullable or av[0] == 0
        elif op is sre_constants.AT:
            digits, nullable = 0, True
        else:
            return ALL_DIGITS, True
        first |= digits
        if not nullable:
            return first, False
    return first, True


def prefix_first_digits(pattern: str) -> int:
    """Return a bit mask of the digits a match of `pattern` at the start of a number may begin with.

    A pattern that may match the empty string may match any number: all bits.
    """
    try:
        digits, nullable = _first(sre_parser.parse(pattern))
    except Exception:  # an unexpected parse tree: assume the worst
        return ALL_DIGITS
    return ALL_DIGITS if nullable else digits


def _entry(country_code: int) -> CountryEntry:
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    general = None if metadata is None else metadata.general_desc
    if metadata is None or general is None:
        return CountryEntry(country_code, region, (), (), None, None, None, 0, ALL_DIGITS, False)
    possible = tuple(general.possible_length or ())
    local = tuple(general.possible_length_local_only or ())
    npfp = metadata.national_prefix_for_parsing or None
    nnp = general.national_number_pattern or None
    mask = 0
    for length in possible + local:
        if MIN_LENGTH_FOR_NSN <= length <= MAX_LENGTH_FOR_NSN:
            mask |= 1 << length
    # The length test of phonenumbers reads the list in order (first = minimum,
    # last = maximum): a bit mask is the same test only on a sorted list.
    exact = bool(possible) and list(possible) == sorted(possible)
    return CountryEntry(
        country_code=country_code,
        region=region,
        possible_lengths=possible,
        local_only_lengths=local,
        national_prefix_for_parsing=None if npfp is None else re.compile(npfp),
        national_prefix_transform_rule=metadata.national_prefix_transform_rule or None,
        national_number_pattern=None if nnp is None else re.compile(nnp),
        length_mask=mask,
        prefix_first_digits=0 if npfp is None else prefix_first_digits(npfp),
        exact=exact,
    )


@functools.cache
def table() -> dict[int, CountryEntry]:
    """Return the entry of every country calling code phonenumbers knows (built once)."""
    return {cc: _entry(cc) for cc in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)}


def split_country_code(digits: str) -> tuple[int, str]:
    """Split a country calling code off `digits`, as phonenumbers does: (0, digits) if none."""
    if not digits or digits[0] == "0":
        return 0, digits
    codes = table()
    for size in range(1, min(len(digits), MAX_LENGTH_COUNTRY_CODE) + 1):
        code = int(digits[:size])
        if code in codes:
            return code, digits[size:]
    return 0, digits


def _length_result(entry: CountryEntry, national_number: str) -> str:
    """Return what phonenumberutil._test_number_length says for the general description."""
    length = len(national_number)
    if length in entry.local_only_lengths:
        return _IS_POSSIBLE_LOCAL_ONLY
    minimum = entry.possible_lengths[0]
    if minimum == length:
        return _IS_POSSIBLE
    if minimum > length:
        return _TOO_SHORT
    if entry.possible_lengths[-1] < length:
        return _TOO_LONG
    return _IS_POSSIBLE if length in entry.possible_lengths[1:] else _INVALID_LENGTH


def _matches_general(entry: CountryEntry, number: str) -> bool:
    return entry.national_number_pattern is not None and (
        entry.national_number_pattern.fullmatch(number) is not None
    )


def national_number(entry: CountryEntry, rest: str) -> str | None:
    """Return the national number `parse` keeps for `rest` (the digits after the code).

    This replays the national-prefix stripping of `parse`
    (`_maybe_strip_national_prefix_carrier_code` and the length condition
    under which `parse` keeps the stripped number). None means "ask
    phonenumbers": a transform rule rewrote the number.
    """
    pattern = entry.national_prefix_for_parsing
    if pattern is None or not rest:
        return rest
    match = pattern.match(rest)
    if match is None:
        return rest
    transform = entry.national_prefix_transform_rule
    if transform and (pattern.groups == 0 or match.group(pattern.groups) is not None):
        return None
    stripped = rest[match.end() :]
    if _matches_general(entry, rest) and not _matches_general(entry, stripped):
        candidate = rest
    else:
        candidate = stripped
    if _length_result(entry, candidate) in (_TOO_SHORT, _IS_POSSIBLE_LOCAL_ONLY, _INVALID_LENGTH):
        return rest
    return candidate


def ask_phonenumbers(number: str) -> bool:
    """Return `is_possible_number(parse(number, None))`; a parse error means not possible."""
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(number, None)))
    except phonenumberutil.NumberParseException:
        return False


def possible_number(number: str) -> bool:
    """Return what `ask_phonenumbers(number)` returns, from the table when it can."""
    if len(number) > MAX_INPUT_STRING_LENGTH or _PLUS_DIGITS.fullmatch(number) is None:
        return ask_phonenumbers(number)
    digits = number[1:]
    if len(digits) <= MIN_LENGTH_FOR_NSN:  # parse: too short after the "+"
        return False
    code, rest = split_country_code(digits)
    if code == 0:
        return False
    entry = table()[code]
    if not entry.exact:
        return ask_phonenumbers(number)
    if len(rest) < MIN_LENGTH_FOR_NSN:
        return False
    nsn = national_number(entry, rest)
    if nsn is None:
        return ask_phonenumbers(number)
    if not MIN_LENGTH_FOR_NSN <= len(nsn) <= MAX_LENGTH_FOR_NSN:
        return False
    return _length_result(entry, nsn) in (_IS_POSSIBLE, _IS_POSSIBLE_LOCAL_ONLY)
