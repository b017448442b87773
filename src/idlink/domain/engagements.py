"""Engagements and the journey (SPEC 6).

Engagements are stored on the contact they happened on; contact PIDs never
change, so a customer's journey is the engagements of its contacts now, plus
those pinned to it, minus those pinned elsewhere. Free text (the summary and
attribute values) is redacted here, before the write, when the account's
security policy asks for it (SPEC 8): what is stored is already redacted,
whatever the store does to seal it.
"""

from __future__ import annotations

import base64
import struct
import uuid

from idlink.domain.contacts import ContactKey, check_text, prepare_contact
from idlink.domain.pids import follow_redirects
from idlink.domain.unit import AccountUnit
from idlink.errors import InvalidArgument, NotFound
from idlink.security.policy import with_defaults
from idlink.security.redaction import redact
from idlink.store.txn import AccountTxn, EngagementState, SecurityPolicyState

MAX_SUMMARY_CHARS = 16384
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


def check_engagement(channel: str, direction: str, summary: str, engagement_id: bytes) -> None:
    """Refuse an engagement that cannot be stored, naming the field."""
    check_text(channel, "channel", 64)
    check_text(direction, "direction", 64, required=False)
    if len(summary) > MAX_SUMMARY_CHARS:
        raise InvalidArgument(
            f"summary is longer than {MAX_SUMMARY_CHARS} characters", field="summary"
        )
    if engagement_id and len(engagement_id) != 16:
        raise InvalidArgument("engagement_id must be a UUID", field="engagement_id")


def record_engagement(
    unit: AccountUnit,
    secret: bytes,
    key: ContactKey,
    *,
    occurred_at_us: int,
    channel: str,
    direction: str,
    summary: str,
    attributes: dict[str, str],
    engagement_id: bytes,
) -> EngagementState:
    """Store one interaction on the contact it happened on (created if new)."""
    prepared = prepare_contact(secret, unit.config, key)
    if unit.contact(prepared.pid) is None:
        unit.ensure_contact(prepared)
        unit.load([prepared.pid])
        unit.flush()
    if engagement_id:
        existing = unit.txn.get_engagement(engagement_id)
        if existing is not None:
            return existing  # an idempotent retry
    engagement = EngagementState(
        engagement_id=engagement_id or uuid.uuid4().bytes,
        contact_pid=prepared.pid,
        occurred_at_us=occurred_at_us,
        channel=channel,
        direction=direction,
        summary=summary,
        attributes=attributes,
        recorded_at_us=unit.now,
    )
    redact_free_text(unit.txn, engagement)
    unit.txn.put_engagement(engagement)
    return engagement


def redact_free_text(txn: AccountTxn, engagement: EngagementState) -> None:
    """Redact an engagement's summary and attribute values in place, if the account asks."""
    policy = with_defaults(txn.get_security_policy() or SecurityPolicyState())
    if not policy.redact_free_text:
        return
    region = policy.default_region
    engagement.summary = redact(engagement.summary, region)
    for name, value in list(engagement.attributes.items()):
        engagement.attributes[name] = redact(value, region)


def relink_engagement(
    unit: AccountUnit, engagement_id: bytes, customer_pid: bytes
) -> EngagementState:
    """Pin one engagement to a customer; the pin survives later merges (SPEC 3.6)."""
    txn = unit.txn
    engagement = txn.get_engagement(engagement_id)
    if engagement is None:
        raise NotFound("engagement not found", field="engagement_id")
    target, _ = follow_redirects(txn, customer_pid)
    if txn.get_customer(target) is None:
        raise NotFound("customer not found", field="customer_pid")
    if engagement.pinned_customer_pid:
        txn.delete_pin(engagement.pinned_customer_pid, engagement_id)
    engagement.pinned_customer_pid = target
    txn.put_engagement(engagement)
    txn.put_pin(target, engagement_id)
    unit.emit("updated", target, detail="engagement relinked")
    return engagement
