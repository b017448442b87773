"""Masking of PII for roles without PII access (SPEC 8).

``+15551234567`` -> ``+1555*****67``; ``john.smith@company.com`` ->
``j***@company.com``; other values keep their first and last two characters
when long enough to stay unguessable, and are fully starred otherwise. Record
ids (which a source may make of a phone number or an email) keep their first
two and last two characters: ``+15557654321`` -> ``+1********21``.
"""

from __future__ import annotations

STAR = "*"
# Characters a masked record id keeps at each end, and the length up to which
# it keeps none (at least five characters always stay hidden).
RECORD_ID_CLEAR_CHARS = 2
RECORD_ID_MASK_ALL_CHARS = 8


def mask_phone(value: str) -> str:
    """Keep the first four digits (with a leading ``+``) and the last two."""
    head = 5 if value.startswith("+") else 4
    if len(value) <= head + 2:
        return STAR * len(value)
    return value[:head] + STAR * (len(value) - head - 2) + value[-2:]


def mask_email(value: str) -> str:
    """Keep the first character of the local part and the whole domain."""
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return mask_text(value)
    return local[0] + STAR * 3 + "@" + domain


def mask_text(value: str) -> str:
    """Any other value or free text."""
    if len(value) <= 6:
        return STAR * len(value)
    return value[:1] + STAR * (len(value) - 3) + value[-2:]


def mask_record_id(value: str) -> str:
    """Keep the first two and the last two characters; up to eight, star them all."""
    keep = RECORD_ID_CLEAR_CHARS
    if len(value) <= RECORD_ID_MASK_ALL_CHARS:
        return STAR * len(value)
    return value[:keep] + STAR * (len(value) - 2 * keep) + value[-keep:]


def mask_contact(type_name: str, value: str) -> str:
    if not value:
        return value
    if type_name == "phone" or (value.startswith("+") and value[1:].isdigit()):
        return mask_phone(value)
    if "@" in value:
        return mask_email(value)
    return mask_text(value)
