"""Free-text redaction (SPEC 8): phone numbers, emails and card numbers in engagement text.

Applied by the domain before an engagement is written (domain/engagements.py),
when the account's security policy says ``redact_free_text``; what is stored
(and answered) then holds ``[PHONE]``, ``[EMAIL]`` and ``[CARD]`` instead.
"""

from __future__ import annotations

import re

import phonenumbers

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by spaces or dashes.
CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")


def luhn_ok(digits: str) -> bool:
    """The Luhn check that every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _cards(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else match.group()

    return CARD.sub(replace, text)


def _phones(text: str, region: str) -> str:
    spans = [
        (m.start, m.end)
        for m in phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.POSSIBLE
        )
    ]
    for start, end in reversed(spans):
        text = text[:start] + "[PHONE]" + text[end:]
    return text


def redact(text: str, region: str = "US") -> str:
    """Replace emails, card numbers (Luhn) and phone numbers in free text."""
    if not text:
        return text
    text = EMAIL.sub("[EMAIL]", text)
    text = _cards(text)  # before phones: a card number can look like a long phone number
    return _phones(text, region)
