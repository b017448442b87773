"""Clean-up, validation and PIDs of the compiled module give the twin's results on any input.

Property-based; each test crosses `_contacts_c` against `_contacts_py` (the
`compiled` fixture of tests/_native/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from idlink._native import _contacts_py as twin

SECRET = bytes(range(32))
NORMALIZERS = st.sampled_from([twin.NORMALIZER_TRIM, twin.NORMALIZER_PHONE, twin.NORMALIZER_EMAIL])

# Characters the rules treat specially, mixed into arbitrary text.
SPECIAL = (
    "+\uff0b0123456789 \t\r\n\u00a0\u3000\u2028\x85\u200b\u200c\u200d\u2060\ufeff"
    "@.-()\x00\x1f\x7f\x9f"
    "\uff10\uff15\u0660\u0665\u06f0\u0966\u09e6\u1040\U0001d7ce"  # digits of other scripts
    "AZaz\u00c9\u0130\u1e9e\u03a3"  # case mapping, including ones that change length
)
TEXT = st.text(st.one_of(st.sampled_from(SPECIAL), st.characters()), max_size=40)
PHONE_LIKE = st.builds(
    lambda plus, digits, seps: plus + "".join(d + s for d, s in zip(digits, seps, strict=False)),
    st.sampled_from(["", "+", "00", "\uff0b", " +", "(+"]),
    st.text(st.sampled_from("0123456789"), min_size=0, max_size=18),
    st.lists(st.sampled_from(["", "", "", " ", "-", ")", "\u200b", "."]), max_size=18),
)
EMAIL_LIKE = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(st.sampled_from("abcXYZ.+ @"), max_size=6),
    st.text(st.sampled_from("abcXYZ.- @"), max_size=8),
)
VALUES = st.one_of(TEXT, PHONE_LIKE, EMAIL_LIKE)


def outcome(call: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """Return ("returns", value) or ("raises", exception type): both must match the twin."""
    try:
        return "returns", call(*args)
    except Exception as exc:  # lone surrogates cannot be encoded for hashing
        return "raises", type(exc)


@settings(max_examples=400, deadline=None)
@given(normalizer=NORMALIZERS, value=VALUES)
@example(normalizer=twin.NORMALIZER_PHONE, value="\u0661\u0662\u0663+4")
@example(normalizer=twin.NORMALIZER_EMAIL, value="\u0130@X.COM")
def test_clean_and_invalid_reason_match_the_twin(
    compiled: SimpleNamespace, normalizer: int, value: str
) -> None:
    contacts = compiled.contacts
    cleaned = contacts.clean(normalizer, value)
    assert cleaned == twin.clean(normalizer, value)
    assert contacts.invalid_reason(normalizer, cleaned) == twin.invalid_reason(normalizer, cleaned)
    # Validation is defined for any text, not only for cleaned values.
    assert contacts.invalid_reason(normalizer, value) == twin.invalid_reason(normalizer, value)


@settings(max_examples=300, deadline=None)
@given(normalizer=NORMALIZERS, value=VALUES, type_name=TEXT, source=TEXT)
def test_prepare_matches_the_twin(
    compiled: SimpleNamespace, normalizer: int, value: str, type_name: str, source: str
) -> None:
    args = (SECRET, normalizer, type_name, source)
    contacts = compiled.contacts
    assert outcome(contacts.prepare, *args, value) == outcome(twin.prepare, *args, value)
    assert outcome(contacts.prepare_many, *args, [value]) == outcome(
        twin.prepare_many, *args, [value]
    )


@settings(max_examples=200, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), cleaned=st.text(max_size=300))
def test_contact_pid_matches_the_twin_for_any_secret_and_length(
    compiled: SimpleNamespace, secret: bytes, cleaned: str
) -> None:
    # Values of every length cross the 128-byte block boundaries of BLAKE2b.
    expected = outcome(twin.contact_pid, secret, "email", "", cleaned)
    assert outcome(compiled.contacts.contact_pid, secret, "email", "", cleaned) == expected
