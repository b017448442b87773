"""Masking of PII for roles without PII access (SPEC 8).

``+15551234567`` -> ``+1555*****67``; ``john.smith@company.com`` ->
``j***@company.com``; other values keep their first and last two characters
when long enough to stay unguessable, and are fully starred otherwise.
"""

from __future__ import annotations

STAR = "*"


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


def mask_contact(type_name: str, value: str) -> str:
    if not value:
        return value
    if type_name == "phone" or (value.startswith("+") and value[1:].isdigit()):
        return mask_phone(value)
    if "@" in value:
        return mask_email(value)
    return mask_text(value)
