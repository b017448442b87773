"""Erasure and export of one customer (SPEC 8: the right to be forgotten, the right of access).

Erasure removes every contact of the customer with everything that names it:
its records (a record that names other contacts too keeps them, and their
customers are worked out again), connections, index entries, national-number
index entries, policies, engagements (on its contacts or pinned to it), pins,
the profile and the customer's history; the change feed keeps its events
without the erased contact PIDs. What remains is a tombstone: the
customer PID, so that a lookup answers ``NOT_FOUND`` with reason ``ERASED``,
and an ``erased`` event in the change feed.

Contact values are sealed in the store and their pages are freed by LMDB; a
compacted copy (``Store.backup(compact=True)``) or page reuse leaves no trace.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from idlink.domain import profiles
from idlink.domain.contacts import national_number
from idlink.domain.engagements import journey_page
from idlink.domain.engine import IdentityEngine
from idlink.domain.keytypes import KeyType
from idlink.domain.pids import follow_redirects
from idlink.domain.unit import AccountUnit
from idlink.domain.views import ContactView
from idlink.errors import NotFound
from idlink.store.txn import AccountTxn, CustomerState

ERASED = "ERASED"


def is_erased(txn: AccountTxn, pid: bytes) -> bool:
    """True when ``pid`` (or the PID it redirects to) is the tombstone of an erased customer."""
    current, _ = follow_redirects(txn, pid)
    return txn.tombstone(current) is not None


def erased_error() -> NotFound:
    return NotFound("customer not found: it was erased", reason=ERASED)


@dataclass(slots=True)
class Erasure:
    customer_pid: bytes
    contacts: int = 0
    records_deleted: int = 0
    records_changed: int = 0
    engagements: int = 0


def erase_customer(
    engine: IdentityEngine, account: str, customer_pid: bytes, actor: str = ""
) -> Erasure:
    """Erase one customer in one write transaction and return what was removed."""

    def run(unit: AccountUnit) -> Erasure:
        target, _ = follow_redirects(unit.txn, customer_pid)
        customer = unit.txn.get_customer(target)
        if customer is None:
            if unit.txn.tombstone(target) is not None:
                raise erased_error()
            raise NotFound("customer not found")
        return erase_in(unit, target, customer)

    return engine.write(account, actor, run, create=False)


def erase_in(unit: AccountUnit, target: bytes, customer: CustomerState) -> Erasure:
    """Erase a customer inside a write (used by erasure and retention)."""
    txn, config = unit.txn, unit.config
    erased = set(customer.contact_pids)
    result = Erasure(target, contacts=len(erased))
    others: set[bytes] = set()
    records_seen: set[bytes] = set()
    for pid in customer.contact_pids:
        for key in txn.record_keys_of(pid):
            txn.unindex_record(pid, key)
            if key in records_seen:
                continue
            records_seen.add(key)
            record = txn.get_record_by_canonical(key)
            if record is None:
                continue
            remaining = [p for p in record.contact_pids if p not in erased]
            if not remaining:
                txn.delete_record(record.source, record.record_id)
                result.records_deleted += 1
                continue
            others.update(remaining)
            _drop_contacts(record, erased)
            txn.put_record(record)
            result.records_changed += 1
    for engagement_id in txn.pins_of(target):
        engagement = txn.get_engagement(engagement_id)
        if engagement is not None:
            txn.delete_engagement(engagement)
            result.engagements += 1
        txn.delete_pin(target, engagement_id)
    for pid in customer.contact_pids:
        contact = txn.get_contact(pid)
        txn.delete_edges_of(pid)
        for engagement in list(txn.engagements_of(pid)):
            if engagement.pinned_customer_pid:
                txn.delete_pin(engagement.pinned_customer_pid, engagement.engagement_id)
            txn.delete_engagement(engagement)
            result.engagements += 1
        if contact is not None:
            key_type = config.key_types.get(contact.type) or KeyType(contact.type)
            national = national_number(key_type, contact.value)
            if national:
                txn.unindex_national(national, pid)
            if contact.isolated:
                txn.set_isolated(pid, False)
        txn.delete_policy(pid)
        txn.delete_contact(pid)
    txn.delete_customer(target)
    txn.delete_history(target)
    # The change feed and other customers' histories keep their events, without these contacts.
    txn.scrub_contacts(erased)
    txn.put_tombstone(target, unit.now)
    if others:
        unit.replay_region(others)
    unit.emit("erased", target, detail="customer erased")
    # Deletion entries of the record log hold the erased records' ids (sealed); no load
    # of an export made before an erasure may switch (domain/staging.py): none is needed.
    txn.forget_record_log()
    return result


def _drop_contacts(record: Any, erased: set[bytes]) -> None:
    for name in ("contact_pids", "group_pids"):
        kept = [p for p in getattr(record, name) if p not in erased]
        del getattr(record, name)[:]
        getattr(record, name).extend(kept)
    pairs = list(record.conflict_contact_pids)
    kept_pairs: list[bytes] = []
    for i in range(0, len(pairs) - 1, 2):
        if pairs[i] not in erased and pairs[i + 1] not in erased:
            kept_pairs.extend(pairs[i : i + 2])
    del record.conflict_contact_pids[:]
    record.conflict_contact_pids.extend(kept_pairs)


# -- export -------------------------------------------------------------------------------


def _pid(pid: bytes) -> str:
    import uuid

    return str(uuid.UUID(bytes=pid)) if pid else ""


def _time(micros: int) -> str:
    return dt.datetime.fromtimestamp(micros / 1_000_000, dt.UTC).isoformat() if micros else ""


def export_customer(engine: IdentityEngine, account: str, customer_pid: bytes) -> dict[str, Any]:
    """Everything held on one customer, as JSON-ready data (SPEC 8)."""
    with engine.read(account) as view:
        if view.exists and is_erased(view.txn, customer_pid):
            raise erased_error()
        customer = view.customer(customer_pid)
        txn = view.txn
        records: dict[bytes, dict[str, Any]] = {}
        for contact in customer.contacts:
            for key in txn.record_keys_of(contact.pid):
                record = txn.get_record_by_canonical(key)
                if record is None or key in records:
                    continue
                records[key] = {
                    "source": record.source,
                    "record_id": record.record_id,
                    "observed_at": _time(record.observed_at_us),
                    "contact_pids": [_pid(p) for p in record.contact_pids],
                    "outcome": record.outcome,
                    "author": record.author,
                }
        engagements: list[dict[str, Any]] = []
        token = ""
        while True:
            page, token = journey_page(
                txn, customer.pid, [c.pid for c in customer.contacts], 500, token
            )
            engagements.extend(
                {
                    "engagement_id": _pid(e.engagement_id),
                    "contact_pid": _pid(e.contact_pid),
                    "occurred_at": _time(e.occurred_at_us),
                    "channel": e.channel,
                    "direction": e.direction,
                    "summary": e.summary,
                    "attributes": dict(e.attributes),
                    "pinned_customer_pid": _pid(e.pinned_customer_pid),
                }
                for e in page
            )
            if not token:
                break
        history = [
            {
                "seq": event.seq,
                "kind": event.kind,
                "at": _time(event.at_us),
                "actor": event.actor,
                "detail": event.detail,
                "other_customer_pids": [_pid(p) for p in event.other_customer_pids],
                "contacts_added": [_pid(p) for p in event.contacts_added],
                "contacts_removed": [_pid(p) for p in event.contacts_removed],
            }
            for event in txn.history_of(customer.pid)
        ]
        policies = _contact_policies(txn, customer.contacts)
    attributes = {
        name: value
        for name, (_, value) in profiles.decode_attributes(customer.profile.attributes).items()
    }
    return {
        "account": account,
        "customer_pid": _pid(customer.pid),
        "anonymous": customer.anonymous,
        "created_at": _time(customer.created_at_us),
        "contacts": [
            {
                "contact_pid": _pid(c.pid),
                "type": c.type,
                "source": c.source,
                "value": c.value,
                "linkable": c.linkable,
                "reason": c.reason,
            }
            for c in customer.contacts
        ],
        "records": [records[k] for k in sorted(records)],
        "profile": {
            "attributes": attributes,
            "labels": list(customer.profile.labels),
            "preferences": profiles.decode_preferences(customer.profile.preferences),
        },
        "engagements": engagements,
        "history": history,
        "contact_policies": policies,
    }


def _contact_policies(txn: AccountTxn, contacts: list[ContactView]) -> list[dict[str, Any]]:
    """The stored policy of each contact that has one (SPEC 2.5), in contact PID order.

    Only do-not-link and never-isolate are stored policies; isolation is derived
    from the records and shows in ``contacts`` as the reason ``ISOLATED``.
    """
    out = []
    for contact in sorted(contacts, key=lambda c: c.pid):
        policy = txn.get_policy(contact.pid)
        if policy is None:
            continue
        out.append(
            {
                "contact_pid": _pid(contact.pid),
                "type": contact.type,
                "source": contact.source,
                "value": contact.value,
                "do_not_link": policy.do_not_link,
                "never_isolate": policy.never_isolate,
                "set_by": policy.set_by,
                "set_at": _time(policy.set_at_us),
            }
        )
    return out
