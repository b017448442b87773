"""Contact clean-up, validation and PIDs (SPEC 2.1-2.3), on both implementations."""

from __future__ import annotations

import hashlib
import uuid
from types import SimpleNamespace

import pytest

TRIM, PHONE, EMAIL = 1, 2, 3
SECRET = bytes(range(32))


# --- SPEC 2.1: clean-up ----------------------------------------------------------------

SPEC_EXAMPLES = [
    # (normalizer, raw value, cleaned)
    (TRIM, "  ID 1234 ", "ID 1234"),
    (PHONE, "+1 (555) 123-4567", "+15551234567"),
    (PHONE, "(555) 123-4567", "5551234567"),
    (PHONE, "00420 123 456 789", "+420123456789"),
    (EMAIL, "John.Smith@company.com", "john.smith@company.com"),
    # a phone number sent as type `id` gets only the white-space rule
    (TRIM, " +1 (555) 123-4567 ", "+1 (555) 123-4567"),
]


@pytest.mark.parametrize(("normalizer", "raw", "cleaned"), SPEC_EXAMPLES)
def test_spec_clean_up_examples(
    native_impl: SimpleNamespace, normalizer: int, raw: str, cleaned: str
) -> None:
    assert native_impl.contacts.clean(normalizer, raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("(+44) 20 7946 0958", "+442079460958"),
        (
            "\uff0b\uff11\uff15\uff15\uff15\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
            "+15551234567",
        ),
        ("+\u0661\u0665\u0665\u0665\u0661\u0662\u0663\u0664\u0665\u0666\u0667", "+15551234567"),
        ("\u0967\u0968\u0969", "123"),  # Devanagari digits
        ("tel: +1-555-123-4567 ext", "+15551234567"),
        ("1+555", "1555"),  # a plus after a digit is dropped
        ("++44 20", "+4420"),  # only the first plus is kept
        ("+ +44", "+44"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+0044 20", "+004420"),  # already has a plus: 00 stays
        ("00", "+"),
        ("0", "0"),
        ("anonymous", ""),
        ("restricted", ""),
        ("", ""),
        ("+", "+"),
        ("\u200b+44 7700 900123\ufeff", "+447700900123"),
        ("+44\u200b7700 900123", "+447700900123"),
    ],
)
def test_phone_clean_up(native_impl: SimpleNamespace, raw: str, cleaned: str) -> None:
    assert native_impl.contacts.clean(PHONE, raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("  John.Smith@Company.COM\n", "john.smith@company.com"),
        ("John+Tag@Company.com", "john+tag@company.com"),  # no plus-tag folding
        ("J.O.H.N@x.com", "j.o.h.n@x.com"),  # no dot folding
        ("\u00c9MILE@\u00c9COLE.FR", "\u00e9mile@\u00e9cole.fr"),
        ("\ufeffa@b.co\u200b", "a@b.co"),
    ],
)
def test_email_clean_up(native_impl: SimpleNamespace, raw: str, cleaned: str) -> None:
    assert native_impl.contacts.clean(EMAIL, raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (" \t\r\n\u00a0ID 1234\u3000\u2028", "ID 1234"),  # white space of every kind
        ("\u200b\u200c\u200d\u2060\ufeffID\ufeff\u2060\u200d\u200c\u200b", "ID"),
        ("\u200b \u200b ID \u200b \u200b", "ID"),  # mixed, interleaved
        ("I\u200bD  1\u00a0234", "I\u200bD  1\u00a0234"),  # nothing inside is touched
        ("\x85ID\x85", "ID"),  # NEL is white space
        ("   ", ""),
        ("\u200b\ufeff", ""),
    ],
)
def test_trim_strips_white_space_and_invisible_characters_at_the_ends(
    native_impl: SimpleNamespace, raw: str, cleaned: str
) -> None:
    assert native_impl.contacts.clean(TRIM, raw) == cleaned


# --- SPEC 2.2: validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalizer", "cleaned", "reason"),
    [
        # every type
        (TRIM, "", "EMPTY"),
        (PHONE, "", "EMPTY"),
        (EMAIL, "", "EMPTY"),
        (TRIM, "a" * 512, ""),
        (TRIM, "a" * 513, "TOO_LONG"),
        (TRIM, "\u00e9" * 256, ""),  # 512 bytes
        (TRIM, "\u00e9" * 256 + "a", "TOO_LONG"),  # 513 bytes
        (TRIM, "\u20ac" * 170 + "ab", ""),  # 3-byte characters, 512 bytes
        (TRIM, "\u20ac" * 171, "TOO_LONG"),  # 513 bytes
        (TRIM, "\U0001f600" * 128, ""),  # 4-byte characters, 512 bytes
        (TRIM, "\U0001f600" * 128 + "a", "TOO_LONG"),
        (EMAIL, "a" * 400 + "@" + "b" * 108 + ".com", "TOO_LONG"),  # before EMAIL_TOO_LONG
        (TRIM, "ab\x00cd", "CONTROL_CHARACTER"),
        (TRIM, "a\tb", "CONTROL_CHARACTER"),
        (TRIM, "a\x7fb", "CONTROL_CHARACTER"),
        (TRIM, "a\x85b", "CONTROL_CHARACTER"),
        (TRIM, "a\x9fb", "CONTROL_CHARACTER"),
        (TRIM, "a\xa0b", ""),  # NBSP is not a control character
        (TRIM, "a\u200bb", ""),  # a zero-width space is a format character, allowed
        (TRIM, "\x00" * 600, "TOO_LONG"),  # length is checked first
        (EMAIL, "jo\x01hn@x.com", "CONTROL_CHARACTER"),
        (PHONE, "\x01", "CONTROL_CHARACTER"),
        # phone: 7 to 15 digits
        (PHONE, "123456", "PHONE_LENGTH"),
        (PHONE, "1234567", ""),
        (PHONE, "123456789012345", ""),
        (PHONE, "1234567890123456", "PHONE_LENGTH"),
        (PHONE, "+123456", "PHONE_LENGTH"),
        (PHONE, "+1234567890123456", "PHONE_LENGTH"),
        (PHONE, "+", "PHONE_LENGTH"),
        # phone with a country code: phonenumbers' is_possible_number
        (PHONE, "+15551234567", ""),
        (PHONE, "+1555123456", "PHONE_NOT_POSSIBLE"),  # 9-digit NANP number
        (PHONE, "+12345678901234", "PHONE_NOT_POSSIBLE"),
        (PHONE, "+442079460958", ""),
        (PHONE, "+4420794609581", "PHONE_NOT_POSSIBLE"),
        (PHONE, "+420123456789", ""),
        (PHONE, "+491234567890123", ""),  # 15 digits, possible
        (PHONE, "+861012345678901", "PHONE_NOT_POSSIBLE"),  # 15 digits, not possible
        (PHONE, "+1234567", "PHONE_NOT_POSSIBLE"),  # 7 digits, local-only length of +1 is 7
        (PHONE, "+999123456789", "PHONE_NOT_POSSIBLE"),  # no such country code
        (PHONE, "+0123456789", "PHONE_NOT_POSSIBLE"),  # country codes never start with 0
        (PHONE, "+79123456789", ""),
        (PHONE, "+5491123456789", ""),  # Argentina: national prefix pattern may match
        (PHONE, "+3906123456", ""),  # Italy: leading zero kept in the national number
        (PHONE, "+44 20 7946 0958", ""),  # not a cleaned value: phonenumbers decides
        # email
        (EMAIL, "john.smith@company.com", ""),
        (EMAIL, "a@b.c", ""),
        (EMAIL, "a@b@c.com", "EMAIL_FORMAT"),  # two @
        (EMAIL, "john@localhost", "EMAIL_FORMAT"),  # no dot in the domain
        (EMAIL, "john.smith@localhost", "EMAIL_FORMAT"),  # a dot only in the local part
        (EMAIL, "@company.com", "EMAIL_FORMAT"),  # empty local part
        (EMAIL, "john.smith.company.com", "EMAIL_FORMAT"),  # no @
        (EMAIL, "john smith@company.com", "EMAIL_FORMAT"),  # white space inside
        (EMAIL, "john@company.com\u00a0x", "EMAIL_FORMAT"),  # NBSP is white space
        (EMAIL, "john@company .com", "EMAIL_FORMAT"),
        (EMAIL, "jo\u200bhn@company.com", ""),  # zero-width is not white space
        (EMAIL, "a" * 64 + "@" + "b" * 185 + ".com", ""),  # 254 characters
        (EMAIL, "a" * 64 + "@" + "b" * 186 + ".com", "EMAIL_TOO_LONG"),  # 255
        (EMAIL, "a" * 300, "EMAIL_TOO_LONG"),  # before the format
        (TRIM, "not an email, not a phone", ""),
    ],
)
def test_validation(
    native_impl: SimpleNamespace, normalizer: int, cleaned: str, reason: str
) -> None:
    assert native_impl.contacts.invalid_reason(normalizer, cleaned) == reason


def test_withheld_caller_ids_are_empty_phones(native_impl: SimpleNamespace) -> None:
    for raw in ("anonymous", "Restricted", "unknown", "  "):
        cleaned, reason, _ = native_impl.contacts.prepare(SECRET, PHONE, "phone", "", raw)
        assert (cleaned, reason) == ("", "EMPTY")


def test_lone_surrogates_count_three_bytes_and_cannot_be_hashed(
    native_impl: SimpleNamespace,
) -> None:
    contacts = native_impl.contacts
    assert contacts.invalid_reason(TRIM, "\ud800" * 170) == ""
    assert contacts.invalid_reason(TRIM, "\ud800" * 171) == "TOO_LONG"
    with pytest.raises(UnicodeEncodeError):
        contacts.contact_pid(SECRET, "id", "", "\ud800")


# --- SPEC 2.3: contact PIDs -------------------------------------------------------------

# Computed once from the pure-Python twin; both implementations must reproduce them.
GOLDEN = [
    (SECRET, "phone", "", "+15551234567", "3d77c358269c878bbe06944775346d02"),
    (SECRET, "phone", "", "5551234567", "dcd626436d86892baf3d688b524a68e8"),
    (SECRET, "email", "", "john.smith@company.com", "0a872280f4258c04b57dbcd51fc4392e"),
    (SECRET, "id", "zendesk", "ID 1234", "f183f2d614e9839296e76376722824ea"),
    (SECRET, "id", "salesforce", "ID 1234", "335b35ea268e8f6491031c24b305e9b1"),
    (SECRET, "email", "", "j\u00f6hn@b\u00fccher.de", "305794b22b258dd08bd4cdf514e8e369"),
    (bytes(32), "phone", "", "+15551234567", "339eaa04a3468bb0ac012c7f8eb37389"),
]


@pytest.mark.parametrize(("secret", "type_name", "source", "cleaned", "expected"), GOLDEN)
def test_contact_pid_golden_vectors(
    native_impl: SimpleNamespace,
    secret: bytes,
    type_name: str,
    source: str,
    cleaned: str,
    expected: str,
) -> None:
    assert native_impl.contacts.contact_pid(secret, type_name, source, cleaned).hex() == expected


def test_contact_pid_is_keyed_blake2b_made_a_uuid_v8(native_impl: SimpleNamespace) -> None:
    pid = native_impl.contacts.contact_pid(SECRET, "phone", "", "+15551234567")
    raw = bytearray(
        hashlib.blake2b(
            b"phone\0\0+15551234567", digest_size=16, key=SECRET, person=b"idlink-contact"
        ).digest()
    )
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    assert pid == bytes(raw)
    as_uuid = uuid.UUID(bytes=pid)
    assert as_uuid.version == 8
    assert as_uuid.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "size", [0, 1, 119, 120, 121, 127, 128, 129, 248, 249, 250, 255, 256, 257, 600]
)
def test_contact_pid_at_hash_block_boundaries(native_impl: SimpleNamespace, size: int) -> None:
    # "email" + 2 separators = 7 bytes, so these sizes put the data at 127-129,
    # 255-257, ... bytes: either side of BLAKE2b's 128-byte blocks.
    for cleaned in ("x" * size, "\u00e9" * (size // 2)):
        data = b"email\0\0" + cleaned.encode()
        raw = bytearray(
            hashlib.blake2b(data, digest_size=16, key=SECRET, person=b"idlink-contact").digest()
        )
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        assert native_impl.contacts.contact_pid(SECRET, "email", "", cleaned) == bytes(raw)


def test_contact_pids_differ_by_account_type_source_and_value(native_impl: SimpleNamespace) -> None:
    pid = native_impl.contacts.contact_pid
    other_account = bytes(reversed(SECRET))
    pids = {
        pid(SECRET, "phone", "", "+15551234567"),
        pid(other_account, "phone", "", "+15551234567"),  # same contact, another account
        pid(SECRET, "phone", "", "5551234567"),  # with and without country code
        pid(SECRET, "id", "zendesk", "1234"),
        pid(SECRET, "id", "salesforce", "1234"),  # source-scoped types
        pid(SECRET, "crm_id", "zendesk", "1234"),
        pid(SECRET, "id", "zendesk\x001234", ""),  # the separators keep fields apart
    }
    assert len(pids) == 7
    assert pid(SECRET, "phone", "", "+15551234567") == pid(SECRET, "phone", "", "+15551234567")


def test_no_unkeyed_hash_is_a_pid(native_impl: SimpleNamespace) -> None:
    # SPEC 2.3: the PID must not be computable without the account secret.
    for bad in (b"", b"short", SECRET + b"x"):
        with pytest.raises(ValueError):
            native_impl.contacts.contact_pid(bad, "phone", "", "+15551234567")


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.clean(0, "x"),
        lambda c: c.clean(4, "x"),
        lambda c: c.clean(2**80, "x"),
        lambda c: c.invalid_reason(9, "x"),
        lambda c: c.prepare(SECRET, 0, "phone", "", "x"),
        lambda c: c.prepare_many(SECRET, 7, "phone", "", []),
        lambda c: c.prepare_many(b"short", PHONE, "phone", "", []),
    ],
)
def test_bad_arguments_raise_value_error(native_impl: SimpleNamespace, call) -> None:
    with pytest.raises(ValueError):
        call(native_impl.contacts)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.clean(TRIM, None),
        lambda c: c.clean(TRIM, b"x"),
        lambda c: c.clean(1.0, "x"),
        lambda c: c.invalid_reason(TRIM, None),
        lambda c: c.contact_pid(SECRET.decode("latin-1"), "phone", "", "x"),
        lambda c: c.contact_pid(bytearray(SECRET), "phone", "", "x"),
        lambda c: c.contact_pid(SECRET, None, "", "x"),
        lambda c: c.prepare(SECRET, PHONE, "phone", None, "x"),
        lambda c: c.prepare_many(SECRET, PHONE, "phone", "", ["x", None]),
        lambda c: c.prepare_many(SECRET, PHONE, b"phone", "", []),
    ],
)
def test_bad_argument_types_raise_type_error(native_impl: SimpleNamespace, call) -> None:
    with pytest.raises(TypeError):
        call(native_impl.contacts)


# --- the hot path -----------------------------------------------------------------------


def test_prepare_is_clean_then_validate_then_hash(native_impl: SimpleNamespace) -> None:
    c = native_impl.contacts
    for normalizer, raw, _ in SPEC_EXAMPLES:
        cleaned = c.clean(normalizer, raw)
        expected = (
            cleaned,
            c.invalid_reason(normalizer, cleaned),
            c.contact_pid(SECRET, "t", "s", cleaned),
        )
        assert c.prepare(SECRET, normalizer, "t", "s", raw) == expected


def test_prepare_many_is_prepare_of_each(native_impl: SimpleNamespace) -> None:
    c = native_impl.contacts
    values = ["+1 (555) 123-4567", "", "anonymous", "00420 123 456 789", "+0", "12"]
    assert c.prepare_many(SECRET, PHONE, "phone", "", values) == [
        c.prepare(SECRET, PHONE, "phone", "", v) for v in values
    ]
    assert c.prepare_many(SECRET, PHONE, "phone", "", iter(values)) == c.prepare_many(
        SECRET, PHONE, "phone", "", values
    )
    assert c.prepare_many(SECRET, PHONE, "phone", "", []) == []


def test_secret_can_change_between_calls(native_impl: SimpleNamespace) -> None:
    c = native_impl.contacts
    one, two = SECRET, bytes(reversed(SECRET))
    first = c.contact_pid(one, "phone", "", "+15551234567")
    second = c.contact_pid(two, "phone", "", "+15551234567")
    assert first != second
    assert c.contact_pid(bytes(one), "phone", "", "+15551234567") == first
    assert c.contact_pid(two, "phone", "", "+15551234567") == second
