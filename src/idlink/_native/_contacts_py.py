"""Contact clean-up, validation and hashing (SPEC 2.1-2.3): the pure-Python twin.

This module is the specification of the compiled ``_contacts_c``; it asks
``phonenumbers`` about every number with a country code.
"""

from __future__ import annotations

import hashlib
import unicodedata

import phonenumbers

NORMALIZER_TRIM = 1
NORMALIZER_PHONE = 2
NORMALIZER_EMAIL = 3

MAX_VALUE_BYTES = 512
MAX_EMAIL_CHARS = 254
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_PERSON = b"idlink-contact"


def _strip(value: str) -> str:
    start, end = 0, len(value)
    while start < end and (value[start].isspace() or value[start] in _INVISIBLE):
        start += 1
    while end > start and (value[end - 1].isspace() or value[end - 1] in _INVISIBLE):
        end -= 1
    return value[start:end]


def _clean_phone(value: str) -> str:
    out: list[str] = []
    plus = False
    for ch in value:
        if ch.isdecimal():
            out.append(ch if "0" <= ch <= "9" else str(unicodedata.decimal(ch)))
        elif ch == "+" and not out and not plus:
            plus = True
    digits = "".join(out)
    if plus:
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    return digits


def clean(normalizer: int, value: str) -> str:
    """Clean a raw value the way its key type's normalizer says (SPEC 2.1)."""
    stripped = _strip(value)
    if normalizer == NORMALIZER_PHONE:
        return _clean_phone(stripped)
    if normalizer == NORMALIZER_EMAIL:
        return stripped.lower()
    return stripped


def _possible_phone(cleaned: str) -> bool:
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(cleaned, None)))
    except phonenumbers.NumberParseException:
        return False


def invalid_reason(normalizer: int, cleaned: str) -> str:
    """Why a cleaned value is invalid ("" when it is valid) (SPEC 2.2)."""
    if not cleaned:
        return "EMPTY"
    if len(cleaned.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        return "TOO_LONG"
    if any(unicodedata.category(ch) == "Cc" for ch in cleaned):
        return "CONTROL_CHARACTER"
    if normalizer == NORMALIZER_PHONE:
        digits = len(cleaned) - cleaned.startswith("+")
        if not 7 <= digits <= 15:
            return "PHONE_LENGTH"
        if cleaned.startswith("+") and not _possible_phone(cleaned):
            return "PHONE_NOT_POSSIBLE"
    elif normalizer == NORMALIZER_EMAIL:
        if len(cleaned) > MAX_EMAIL_CHARS:
            return "EMAIL_TOO_LONG"
        local, at, domain = cleaned.partition("@")
        if (
            not at
            or "@" in domain
            or not local
            or "." not in domain
            or any(ch.isspace() for ch in cleaned)
        ):
            return "EMAIL_FORMAT"
    return ""


def contact_pid(secret: bytes, type_name: str, source: str, cleaned: str) -> bytes:
    """The contact PID: keyed BLAKE2b-128 as an RFC 9562 UUIDv8 (SPEC 2.3)."""
    data = type_name.encode() + b"\0" + source.encode() + b"\0" + cleaned.encode()
    digest = bytearray(hashlib.blake2b(data, digest_size=16, key=secret, person=_PERSON).digest())
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return bytes(digest)


def prepare(
    secret: bytes, normalizer: int, type_name: str, source: str, value: str
) -> tuple[str, str, bytes]:
    """Clean, validate and hash one value: (cleaned, invalid_reason, pid)."""
    cleaned = clean(normalizer, value)
    return cleaned, invalid_reason(normalizer, cleaned), contact_pid(secret, type_name, source, cleaned)


def prepare_many(
    secret: bytes, normalizer: int, type_name: str, source: str, values: list[str]
) -> list[tuple[str, str, bytes]]:
    return [prepare(secret, normalizer, type_name, source, v) for v in values]
