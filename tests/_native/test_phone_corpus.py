"""The compiled phone check gives phonenumbers' verdict on a corpus of `+` numbers.

SPEC 2.2: a number with `+` is valid only if phonenumbers calls it possible,
`is_possible_number(parse(number, None))`, a parse error meaning not possible.
The compiled module answers from `phone_table` instead of parsing; this
corpus is the proof that it agrees, for every country calling code the
installed phonenumbers knows, at good and bad lengths, with national-prefix
digits and leading zeros.
"""

from __future__ import annotations

import functools
import random
from types import SimpleNamespace

import phonenumbers
import pytest

from idlink._native import phone_table

SEED = 20261123
PER_CODE = 600
DIGITS = "0123456789"


def phonenumbers_says_possible(number: str) -> bool:
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(number, None)))
    except phonenumbers.NumberParseException:
        return False


def prefix_samples(entry: phone_table.CountryEntry, rng: random.Random) -> list[str]:
    """Return digit strings that the code's national-prefix-for-parsing pattern matches."""
    pattern = entry.national_prefix_for_parsing
    if pattern is None:
        return []
    found = set()
    for _ in range(600):
        probe = "".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 9)))
        match = pattern.match(probe)
        if match and match.end() > 0:
            found.add(probe[: match.end()])
    return sorted(found)


@functools.cache
def corpus() -> tuple[tuple[str, bool], ...]:
    """Return (number, phonenumbers' verdict) for PER_CODE numbers of every country code."""
    rng = random.Random(SEED)
    numbers = []
    for code, entry in sorted(phone_table.table().items()):
        lengths = entry.possible_lengths + entry.local_only_lengths
        shortest, longest = max(min(lengths) - 3, 0), max(lengths) + 3
        prefixes = prefix_samples(entry, rng)
        for _ in range(PER_CODE):
            national = "".join(rng.choice(DIGITS) for _ in range(rng.randint(shortest, longest)))
            roll = rng.random()
            if roll < 0.25 and prefixes:  # starts with a national prefix
                national = (rng.choice(prefixes) + national)[: max(len(national), 1)]
            elif roll < 0.35:  # leading zeros
                national = "0" * rng.randint(1, 3) + national[3:]
            numbers.append(f"+{code}{national}")
    return tuple((n, phonenumbers_says_possible(n)) for n in numbers)


def test_corpus_covers_every_country_code_and_both_verdicts() -> None:
    numbers = corpus()
    assert len(numbers) >= 100_000
    codes = {phone_table.split_country_code(n[1:])[0] for n, _ in numbers}
    assert codes == set(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    possible = sum(verdict for _, verdict in numbers)
    assert 0.15 * len(numbers) < possible < 0.85 * len(numbers)


def test_compiled_verdict_equals_phonenumbers(compiled: SimpleNamespace) -> None:
    # Compiled only: the twin asks phonenumbers itself for this verdict, so
    # comparing it with phonenumbers would compare phonenumbers with itself.
    invalid_reason = compiled.contacts.invalid_reason
    checked = 0
    wrong = []
    for number, possible in corpus():
        if not 7 <= len(number) - 1 <= 15:
            assert invalid_reason(2, number) == "PHONE_LENGTH"
            continue
        checked += 1
        expected = "" if possible else "PHONE_NOT_POSSIBLE"
        if invalid_reason(2, number) != expected:
            wrong.append(number)
    assert checked >= 100_000
    assert not wrong, f"{len(wrong)} verdicts differ from phonenumbers, e.g. {wrong[:10]}"


def test_phone_table_verdict_equals_phonenumbers_at_every_length() -> None:
    wrong = [n for n, possible in corpus() if phone_table.possible_number(n) != possible]
    assert not wrong, f"{len(wrong)} verdicts differ from phonenumbers, e.g. {wrong[:10]}"


@pytest.mark.parametrize("code", sorted(phone_table.table()))
def test_prefix_first_digits_never_misses_a_match(code: int) -> None:
    # The compiled module skips the prefix pattern when the first digit is
    # not in this mask, so the mask must cover every digit a match can start with.
    entry = phone_table.table()[code]
    if entry.national_prefix_for_parsing is None:
        assert entry.prefix_first_digits == 0
        return
    rng = random.Random(code)
    for _ in range(300):
        probe = "".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 12)))
        if entry.national_prefix_for_parsing.match(probe):
            assert entry.prefix_first_digits >> int(probe[0]) & 1, (code, probe)


def test_prefix_first_digits_analysis() -> None:
    assert phone_table.prefix_first_digits("0") == 0b1
    assert phone_table.prefix_first_digits("[08]") == 0b1_0000_0001
    assert phone_table.prefix_first_digits("(?:0|90)(\\d{3})?") == 0b10_0000_0001
    assert phone_table.prefix_first_digits("([24-9]\\d{6})$|0") == 0b11_1111_0101
    assert phone_table.prefix_first_digits("0?(?:(11)15)?") == phone_table.ALL_DIGITS
    assert phone_table.prefix_first_digits("[^0-8]") == 0b10_0000_0000
    assert phone_table.prefix_first_digits("[^\\D]") == phone_table.ALL_DIGITS
    # Constructs not analysed count as "any digit": never an under-estimate.
    assert phone_table.prefix_first_digits("[^\\s]") == phone_table.ALL_DIGITS
    assert phone_table.prefix_first_digits("(?=1)1") == phone_table.ALL_DIGITS
