"""Contact clean-up, validation and PIDs (SPEC 2.1-2.3): the pure-Python twin.

This module is the specification of the compiled `_contacts_c`: same names,
same signatures, same results byte for byte. It asks `phonenumbers` about
every number with a country code; the compiled module answers most of them
from `phone_table` instead.
"""

from __future__ import annotations

import hashlib
import operator
import unicodedata

import phonenumbers

NORMALIZER_TRIM = 1
NORMALIZER_PHONE = 2
NORMALIZER_EMAIL = 3

_NORMALIZERS = (NORMALIZER_TRIM, NORMALIZER_PHONE, NORMALIZER_EMAIL)
_MAX_VALUE_BYTES = 512
_MAX_EMAIL_CHARS = 254
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 15
_SECRET_BYTES = 32
_PID_PERSON = b"idlink-contact"
# Zero-width characters that str.isspace() does not cover (SPEC 2.1 "invisible").
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# The plus signs phonenumbers accepts: ASCII and full-width.
_PLUS_SIGNS = frozenset("+\uff0b")
_ASCII_DIGITS = frozenset("0123456789")


def _check_normalizer(normalizer: int) -> int:
    which = operator.index(normalizer)
    if which not in _NORMALIZERS:
        raise ValueError(f"unknown normalizer {normalizer!r}")
    return which


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes):
        raise TypeError(f"the account secret must be bytes, got {type(secret).__name__}")
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"the account secret must be {_SECRET_BYTES} bytes")


def _check_text(*values: str) -> None:
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")


def _is_blank(ch: str) -> bool:
    return ch.isspace() or ch in _INVISIBLE


def _strip(value: str) -> str:
    """Strip white space and invisible characters at both ends only."""
    start, end = 0, len(value)
    while start < end and _is_blank(value[start]):
        start += 1
    while end > start and _is_blank(value[end - 1]):
        end -= 1
    return value[start:end]


def _clean_phone(value: str) -> str:
    out: list[str] = []
    for ch in value:
        if ch.isdecimal():  # category Nd: full-width, Arabic-Indic, ... become ASCII
            out.append(str(unicodedata.decimal(ch)))
        elif ch in _PLUS_SIGNS and not out:  # a plus before every digit; only the first
            out.append("+")
    cleaned = "".join(out)
    if not cleaned.startswith("+") and cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    return cleaned


def clean(normalizer: int, value: str) -> str:
    """Clean a raw value the way its key type's normalizer says (SPEC 2.1)."""
    which = _check_normalizer(normalizer)
    _check_text(value)
    stripped = _strip(value)
    if which == NORMALIZER_PHONE:
        return _clean_phone(stripped)
    if which == NORMALIZER_EMAIL:
        return stripped.lower()
    return stripped


def _possible_phone(cleaned: str) -> bool:
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(cleaned, None)))
    except phonenumbers.NumberParseException:
        return False


def invalid_reason(normalizer: int, cleaned: str) -> str:
    """Return why a cleaned value is invalid, or "" when it is valid (SPEC 2.2)."""
    which = _check_normalizer(normalizer)
    _check_text(cleaned)
    if not cleaned:
        return "EMPTY"
    if len(cleaned.encode("utf-8", "surrogatepass")) > _MAX_VALUE_BYTES:
        return "TOO_LONG"
    if any(unicodedata.category(ch) == "Cc" for ch in cleaned):
        return "CONTROL_CHARACTER"
    if which == NORMALIZER_PHONE:
        digits = sum(ch in _ASCII_DIGITS for ch in cleaned)
        if not _MIN_PHONE_DIGITS <= digits <= _MAX_PHONE_DIGITS:
            return "PHONE_LENGTH"
        if cleaned.startswith("+") and not _possible_phone(cleaned):
            return "PHONE_NOT_POSSIBLE"
    elif which == NORMALIZER_EMAIL:
        if len(cleaned) > _MAX_EMAIL_CHARS:
            return "EMAIL_TOO_LONG"
        local, _, domain = cleaned.partition("@")
        if (
            cleaned.count("@") != 1
            or not local
            or "." not in domain
            or any(ch.isspace() for ch in cleaned)
        ):
            return "EMAIL_FORMAT"
    return ""


def contact_pid(secret: bytes, type_name: str, source: str, cleaned: str) -> bytes:
    """Return the contact PID: keyed BLAKE2b-128 made an RFC 9562 UUIDv8 (SPEC 2.3)."""
    _check_secret(secret)
    _check_text(type_name, source, cleaned)
    data = type_name.encode() + b"\0" + source.encode() + b"\0" + cleaned.encode()
    hashed = hashlib.blake2b(data, digest_size=16, key=secret, person=_PID_PERSON)
    digest = bytearray(hashed.digest())
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # variant 0b10
    return bytes(digest)


def prepare(
    secret: bytes, normalizer: int, type_name: str, source: str, value: str
) -> tuple[str, str, bytes]:
    """Clean, validate and hash one raw value: (cleaned, invalid_reason, pid)."""
    cleaned = clean(normalizer, value)
    return (
        cleaned,
        invalid_reason(normalizer, cleaned),
        contact_pid(secret, type_name, source, cleaned),
    )


def prepare_many(
    secret: bytes, normalizer: int, type_name: str, source: str, values: list[str]
) -> list[tuple[str, str, bytes]]:
    """Prepare many raw values of one key type and source (arguments checked once first)."""
    _check_normalizer(normalizer)
    _check_secret(secret)
    _check_text(type_name, source)
    return [prepare(secret, normalizer, type_name, source, value) for value in values]
