"""Engagements and the journey (SPEC 6).

Engagements are stored on the contact they happened on; contact PIDs never
change, so a customer's journey is the engagements of its contacts now, plus
those pinned to it, minus those pinned elsewhere.
"""

from __future__ import annotations

import base64
import struct

from idlink.domain.customers import follow_redirects
from idlink.errors import InvalidArgument
from idlink.store.txn import AccountTxn, EngagementState

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
_TOKEN = struct.Struct(">q16s")


def journey_page(
    txn: AccountTxn,
    customer_pid: bytes,
    contact_pids: list[bytes],
    page_size: int,
    page_token: str,
) -> tuple[list[EngagementState], str]:
    """One page of a customer's journey, oldest first, and the token of the next page."""
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_token(page_token) if page_token else None
    found: dict[bytes, EngagementState] = {}
    for contact_pid in contact_pids:
        for engagement in txn.engagements_of(contact_pid):
            if engagement.pinned_customer_pid:
                owner, _ = follow_redirects(txn, engagement.pinned_customer_pid)
                if owner != customer_pid:
                    continue
            found[engagement.engagement_id] = engagement
    for engagement_id in txn.pins_of(customer_pid):
        pinned = txn.get_engagement(engagement_id)
        if pinned is not None:
            found[engagement_id] = pinned
    ordered = sorted(found.values(), key=lambda e: (e.occurred_at_us, e.engagement_id))
    if after is not None:
        ordered = [e for e in ordered if (e.occurred_at_us, e.engagement_id) > after]
    page = ordered[:page_size]
    token = ""
    if len(ordered) > page_size:
        last = page[-1]
        token = encode_token(last.occurred_at_us, last.engagement_id)
    return page, token


def encode_token(occurred_at_us: int, engagement_id: bytes) -> str:
    return base64.urlsafe_b64encode(_TOKEN.pack(occurred_at_us, engagement_id)).decode()


def decode_token(token: str) -> tuple[int, bytes]:
    try:
        occurred, engagement_id = _TOKEN.unpack(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, struct.error):
        raise InvalidArgument(
            "page_token is not a token this service gave", field="page_token"
        ) from None
    return occurred, engagement_id
