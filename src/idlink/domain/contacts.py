"""Contacts: the key a caller names, cleaned, validated and hashed (SPEC 2)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers

from idlink._native import _contacts
from idlink.domain.keytypes import NORMALIZER_PHONE, AccountConfig, KeyType
from idlink.errors import InvalidArgument
from idlink.text import check_text

MAX_SOURCE_BYTES = 128
MAX_RECORD_ID_BYTES = 256
MAX_RAW_VALUE_BYTES = 4096
BLOCKED = "BLOCKED"
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@dataclass(frozen=True, slots=True)
class ContactKey:
    """A contact as a caller names it."""

    type: str
    value: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class PreparedContact:
    """A contact after clean-up, validation and hashing."""

    key_type: KeyType
    source: str
    cleaned: str
    invalid_reason: str  # "" when valid; BLOCKED is decided by the key type
    pid: bytes


def account_secret(master_secret: bytes, account: str) -> bytes:
    """Derive an account's hashing key from the master secret."""
    return hmac.new(
        master_secret, b"idlink account secret\0" + account.encode(), hashlib.sha256
    ).digest()


def prepare_contact(
    secret: bytes, config: AccountConfig, key: ContactKey, field: str = "contact"
) -> PreparedContact:
    """Clean, validate and hash one contact key of an account."""
    key_type = config.key_type(key.type, f"{field}.type")
    if key_type.source_scoped:
        check_text(key.source, f"{field}.source", MAX_SOURCE_BYTES)
        source = key.source
    else:
        source = ""
    _check_value(key.value, field)
    cleaned, reason, pid = _contacts.prepare(
        secret, key_type.normalizer, key_type.name, source, key.value
    )
    if not reason and key_type.is_blocked(cleaned):
        reason = BLOCKED
    return PreparedContact(key_type, source, cleaned, reason, pid)


def prepare_contacts(
    secret: bytes, config: AccountConfig, keys: Sequence[tuple[ContactKey, str]]
) -> list[PreparedContact]:
    """:func:`prepare_contact` for many keys at once (each with the field its errors name).

    The keys are checked one by one, in order, as :func:`prepare_contact`
    checks them; then each group of one key type and source is cleaned,
    validated and hashed by one call of the compiled ``prepare_many``.
    """
    checked: list[tuple[KeyType, str]] = []
    groups: dict[tuple[str, str], list[int]] = {}
    # A source is named by many keys of a batch: one that passed its check passes again.
    good_sources: set[str] = set()
    key_types = config.key_types
    for i, (key, field) in enumerate(keys):
        key_type = key_types.get(key.type) or config.key_type(key.type, f"{field}.type")
        if key_type.source_scoped:
            source = key.source
            if source not in good_sources:
                check_text(source, f"{field}.source", MAX_SOURCE_BYTES)
                good_sources.add(source)
        else:
            source = ""
        _check_value(key.value, field)
        checked.append((key_type, source))
        groups.setdefault((key_type.name, source), []).append(i)
    out: list[PreparedContact | None] = [None] * len(keys)
    for (_, source), members in groups.items():
        key_type = checked[members[0]][0]
        done = _contacts.prepare_many(
            secret, key_type.normalizer, key_type.name, source, [keys[i][0].value for i in members]
        )
        blocks = bool(key_type.blocked_values or key_type.blocked_patterns)
        for i, (cleaned, reason, pid) in zip(members, done, strict=True):
            if blocks and not reason and key_type.is_blocked(cleaned):
                reason = BLOCKED
            out[i] = PreparedContact(key_type, source, cleaned, reason, pid)
    return [p for p in out if p is not None]


def _check_value(value: str, field: str) -> None:
    if len(value) > MAX_RAW_VALUE_BYTES:
        raise InvalidArgument(
            f"{field}.value is longer than {MAX_RAW_VALUE_BYTES} characters", field=f"{field}.value"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"{field}.value is not valid UTF-8 text", field=f"{field}.value"
        ) from None


def unusable_reason(
    invalid_reason: str, key_type: KeyType | None, value: str, do_not_link: bool
) -> str:
    """Why a stored contact links to nothing whatever the records say ("" when it may link).

    Invalid, then BLOCKED (from the key type's blocked values now, so changing
    them needs no rewrite of contacts), then DO_NOT_LINK. Isolation is not
    here: it is derived from the records (SPEC 2.5).
    """
    if invalid_reason:
        return invalid_reason
    if key_type is not None and key_type.is_blocked(value):
        return BLOCKED
    if do_not_link:
        return "DO_NOT_LINK"
    return ""


def national_number(key_type: KeyType, cleaned: str) -> str:
    """The national part of a phone number with a country code ("" otherwise).

    Used to suggest ``+15551234567`` for a caller known only as ``5551234567``
    (SPEC 5.2). The country code is the 1-3 digit prefix that is a calling code.
    """
    if key_type.normalizer != NORMALIZER_PHONE or not cleaned.startswith("+"):
        return ""
    digits = cleaned[1:]
    for length in (1, 2, 3):
        if digits[:length].isdigit() and int(digits[:length]) in _COUNTRY_CODES:
            return digits[length:]
    return ""


def national_numbers(key_type: KeyType, values: Sequence[str]) -> list[str]:
    """:func:`national_number` of each value (whole columns in a bulk load).

    The country code depends only on a number's first three digits, so each
    distinct prefix is worked out once.
    """
    if key_type.normalizer != NORMALIZER_PHONE:
        return [""] * len(values)
    code_length: dict[str, int] = {}
    out: list[str] = []
    for cleaned in values:
        if not cleaned.startswith("+"):
            out.append("")
            continue
        prefix = cleaned[1:4]
        length = code_length.get(prefix)
        if length is None:
            codes = (
                n for n in (1, 2, 3) if prefix[:n].isdigit() and int(prefix[:n]) in _COUNTRY_CODES
            )
            length = code_length[prefix] = next(codes, 0)
        out.append(cleaned[1 + length :] if length else "")
    return out


def national_candidates(key_type: KeyType, cleaned: str) -> list[str]:
    """National numbers a phone without a country code may stand for."""
    if key_type.normalizer != NORMALIZER_PHONE or not cleaned or cleaned.startswith("+"):
        return []
    candidates = [cleaned]
    trunk_stripped = cleaned.lstrip("0")
    if trunk_stripped and trunk_stripped != cleaned:
        candidates.append(trunk_stripped)
    return candidates
