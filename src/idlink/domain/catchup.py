"""The catch-up of a generation load: the live account's data brought into its staging account.

:func:`copy_base` copies the non-derived data of the live account (contact
policies, engagements, pins, history, the change feed with its sequence
numbers, redirects, tombstones, the audit log, the counters), a page a
transaction. :func:`catch_up` applies, in rounds, what the live account's
record log holds after the export (records written or deleted, contact
policies, engagements) to the staging account through the domain's own
record path (``records.apply_batch``: late records replay their regions,
deletions delete). The switch (:mod:`switch`) applies the last of it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from idlink.domain import records
from idlink.domain.accounts import config_of
from idlink.domain.contacts import PreparedContact
from idlink.domain.engine import IdentityEngine
from idlink.domain.keytypes import KeyType
from idlink.domain.pids import follow_redirects
from idlink.domain.staging import ACTOR, FEED_PAGE, Staging, accounts_of
from idlink.domain.unit import AccountUnit
from idlink.errors import NotFound
from idlink.store.txn import (
    LOG_CONTACT,
    LOG_DELETED,
    LOG_ENGAGEMENT,
    LOG_POLICY,
    LOG_RECORD,
    AccountTxn,
    ContactState,
    LogEntry,
    RecordState,
    Txn,
)

# The staging account's own change events (the catch-up's) are numbered from here,
# apart from the copied feed; the switch removes them and writes its own events.
FEED_OFFSET = 1 << 62
ROUND_ENTRIES = 20_000  # record log entries per catch-up transaction
FINAL_ENTRIES = 2_000  # the switch happens once a round leaves fewer than this
MAX_ROUNDS = 50
COPY_PAGE = 20_000  # entries of the live account copied per transaction


# -- the non-derived data ---------------------------------------------------------------------


def copy_base(
    engine: IdentityEngine,
    staging: Staging,
    merges: Iterable[tuple[bytes, Sequence[bytes]]] = (),
    *,
    page: int = COPY_PAGE,
) -> None:
    """Copy the live account's non-derived data into the staging account, a page a transaction.

    ``merges`` are the generation's merges (survivor, absorbed customer PIDs):
    each absorbed PID becomes a redirect to its survivor, as a merge online
    leaves it. The change feed and the audit log are copied up to where they
    stood at the first page; the switch copies what they gained since.
    Policies and engagements written meanwhile are in the record log: the
    catch-up copies them again.
    """

    def first(txn: Txn) -> tuple[int, int]:
        live, staged = accounts_of(txn, staging)
        for survivor, absorbed in merges:
            for pid in absorbed:
                if staged.get_customer(pid) is None:
                    staged.put_redirect(pid, survivor)
        sync_pins(live, staged)
        counters = live.counters()
        mine = staged.counters()
        for name in ("contacts", "customers"):
            staged.set_counter(name, max(counters[name], mine[name]))
        staged.set_counter("audit", counters["audit"])
        staged.set_counter("changes", FEED_OFFSET)
        return counters["changes"], counters["audit"]

    # Kept only once committed: a transaction retried after the map grew runs again.
    change_seq, audit_seq = engine.write_keys(first)
    policies = 0
    for kind in ("redirects", "policies", "engagements", "tombstones", "history"):
        token: bytes | None = b""
        while token is not None:

            def copy_page(txn: Txn, kind: str = kind, after: bytes = token) -> tuple[int, Any]:
                live, staged = accounts_of(txn, staging)
                items, following = live.page(kind, after, page)
                for item in items:
                    _put_copied(staged, kind, item)
                return len(items), following

            copied, token = engine.write_keys(copy_page)
            if kind == "policies":
                policies += copied

    def sequence_page(txn: Txn, kind: str, until: int, after: int) -> int:
        """Copy a page of the change feed or the audit log: seq after ``after``, up to ``until``."""
        live, staged = accounts_of(txn, staging)
        if kind == "changes":
            events: Iterable[Any] = live.changes_after(after, page)
            append = staged.append_change
        else:
            events = itertools.islice(live.audit_after(after), page)
            append = staged.append_audit
        last = after
        for event in events:
            if event.seq > until:
                break
            append(event)
            last = event.seq
        return last

    copied_to: dict[str, int] = {}
    for kind, until in (("changes", change_seq), ("audit", audit_seq)):
        copied_seq = 0
        while copied_seq < until:
            reached = engine.write_keys(
                functools.partial(sequence_page, kind=kind, until=until, after=copied_seq)
            )
            if reached == copied_seq:
                break
            copied_seq = reached
        copied_to[kind] = copied_seq

    def count(txn: Txn) -> None:
        _, staged = accounts_of(txn, staging)
        staged.set_counter("policies", policies)

    engine.write_keys(count)
    staging.copied_change_seq, staging.copied_audit_seq = copied_to["changes"], copied_to["audit"]
    staging.applied_log_seq = staging.baseline.record_log_seq


def _put_copied(staged: AccountTxn, kind: str, item: Any) -> None:
    if kind == "redirects":
        pid, target = item
        if staged.get_redirect(pid) is None and staged.get_customer(pid) is None:
            staged.put_redirect(pid, target)
    elif kind == "policies":
        staged.put_policy(*item)
    elif kind == "engagements":
        staged.put_engagement(item)
    elif kind == "tombstones":
        staged.put_tombstone(*item)
    else:
        staged.append_history(*item)


def copy_feed(live: AccountTxn, staged: AccountTxn, after: int, *, history: bool) -> int:
    """Copy change events after ``after``, with their history entries when ``history``."""
    last = after
    while True:
        events = live.changes_after(last, FEED_PAGE)
        if not events:
            return last
        for event in events:
            staged.append_change(event)
            if history:
                staged.append_history(event.customer_pid, event)
                for other in event.other_customer_pids:
                    staged.append_history(other, event)
            last = event.seq


def copy_audit(live: AccountTxn, staged: AccountTxn, after: int) -> int:
    last = after
    for event in live.audit_after(after):
        staged.append_audit(event)
        last = event.seq
    return last


def sync_pins(live: AccountTxn, staged: AccountTxn) -> None:
    """The staging pins are the live ones; a pin of a customer merged away follows its survivor."""
    for customer, engagement_id in list(staged.iter_pins()):
        staged.delete_pin(customer, engagement_id)
    for customer, engagement_id in live.iter_pins():
        target = customer
        if staged.get_customer(customer) is None:
            target, _ = follow_redirects(staged, customer)
        staged.put_pin(target, engagement_id)


# -- the catch-up -----------------------------------------------------------------------------


def catch_up(engine: IdentityEngine, staging: Staging, limit: int = ROUND_ENTRIES) -> int:
    """One round: apply up to ``limit`` record log entries; how many were left behind it."""

    def run(txn: Txn) -> tuple[int, int]:
        live, staged = accounts_of(txn, staging)
        entries = live.log_after(staging.applied_log_seq, limit)
        apply_entries(engine, live, staged, entries)
        applied = entries[-1].seq if entries else staging.applied_log_seq
        return applied, max(0, live.record_log_seq() - applied)

    staging.applied_log_seq, left = engine.write_keys(run)
    return int(left)


def apply_entries(
    engine: IdentityEngine, live: AccountTxn, staged: AccountTxn, entries: Sequence[LogEntry]
) -> int:
    """Apply log entries of the live account to the staging account; records applied."""
    last_of: dict[bytes, LogEntry] = {}
    policies: set[bytes] = set()
    engagement_ids: set[bytes] = set()
    contacts: set[bytes] = set()
    for entry in entries:
        if entry.kind in (LOG_RECORD, LOG_DELETED):
            last_of[entry.body] = entry
        elif entry.kind == LOG_POLICY:
            policies.add(entry.body)
        elif entry.kind == LOG_ENGAGEMENT:
            engagement_ids.add(entry.body)
        elif entry.kind == LOG_CONTACT:
            contacts.add(entry.body)
    for pid in sorted(policies):
        _copy_policy(live, staged, pid)
    puts: list[RecordState] = []
    deletions: list[tuple[str, str]] = []
    for record_hash, entry in last_of.items():
        found = live.record_by_hash(record_hash)
        if found is not None:
            puts.append(found)
        elif entry.deleted is not None:
            deletions.append(entry.deleted)
    applied = stage_records(engine, live, staged, puts, deletions)
    # New contacts no record named (a resolve that creates, an engagement on a new
    # contact): each a customer of its own, as online.
    stage_contacts(engine, live, staged, contacts)
    if policies:
        unit = _unit(engine, staged)
        seeds = {pid for pid in policies if staged.get_contact(pid) is not None}
        if seeds:
            unit.replay_region(seeds)
    for engagement_id in sorted(engagement_ids):
        _copy_engagement(live, staged, engagement_id)
    return applied


def _unit(engine: IdentityEngine, staged: AccountTxn) -> AccountUnit:
    state = staged.get_config()
    assert state is not None
    return AccountUnit(staged, config_of(state), ACTOR, engine.clock())


def _copy_policy(live: AccountTxn, staged: AccountTxn, pid: bytes) -> None:
    policy = live.get_policy(pid)
    existed = staged.get_policy(pid) is not None
    if policy is not None:
        staged.put_policy(pid, policy)
        if not existed:
            staged.add_policy_count(1)
    elif existed:
        staged.delete_policy(pid)
        staged.add_policy_count(-1)


def _copy_engagement(live: AccountTxn, staged: AccountTxn, engagement_id: bytes) -> None:
    current = live.get_engagement(engagement_id)
    old = staged.get_engagement(engagement_id)
    if old is not None:
        staged.delete_engagement(old)
    if current is not None:
        staged.put_engagement(current)


def stage_records(
    engine: IdentityEngine,
    live: AccountTxn,
    staged: AccountTxn,
    puts: Sequence[RecordState],
    deletions: Sequence[tuple[str, str]] = (),
) -> int:
    """Apply records as the live account holds them (by contact PID) to the staging account.

    Through the domain's record path: contacts the staging account does not
    have yet are created from the live ones first (in their live order of
    arrival), then the records are applied as one batch; a record's author
    and time of storing stay the live ones.
    """
    if not puts and not deletions:
        return 0
    unit = _unit(engine, staged)
    config = unit.config
    new: dict[bytes, ContactState] = {}
    for record in puts:
        for pid in record.contact_pids:
            if pid not in new and unit.contact(pid) is None:
                contact = live.get_contact(pid)
                if contact is None:
                    raise NotFound(
                        f"a record of the live account names a missing contact {pid.hex()}"
                    )
                new[pid] = contact
    for pid, contact in sorted(new.items(), key=lambda item: item[1].first_seen):
        made = unit.ensure_contact(_prepared(config.key_types, pid, contact))
        made.created_at_us = contact.created_at_us
    inputs: list[records.RecordInput] = []
    prepared: list[list[PreparedContact]] = []
    for record in puts:
        inputs.append(
            records.RecordInput(record.source, record.record_id, (), record.observed_at_us)
        )
        row = []
        for pid in record.contact_pids:
            contact = unit.contact(pid)
            assert contact is not None
            row.append(_prepared(config.key_types, pid, contact))
        prepared.append(row)
    for source, record_id in deletions:
        if staged.get_record(source, record_id) is not None:
            inputs.append(records.RecordInput(source, record_id, (), 0, deleted=True))
            prepared.append([])
    if not inputs:
        return 0
    records.apply_batch(unit, inputs, prepared)
    for record in puts:
        stored = staged.get_record(record.source, record.record_id)
        if stored is not None and (stored.author, stored.stored_at_us) != (
            record.author,
            record.stored_at_us,
        ):
            stored.author = record.author
            stored.stored_at_us = record.stored_at_us
            staged.put_record(stored)
    return len(inputs)


def stage_contacts(
    engine: IdentityEngine, live: AccountTxn, staged: AccountTxn, pids: Iterable[bytes]
) -> int:
    """Bring live contacts the staging account lacks into it (their own customers); how many."""
    missing = []
    for pid in pids:
        if staged.get_contact(pid) is None:
            contact = live.get_contact(pid)
            if contact is not None:
                missing.append((pid, contact))
    if not missing:
        return 0
    unit = _unit(engine, staged)
    for pid, contact in sorted(missing, key=lambda item: item[1].first_seen):
        made = unit.ensure_contact(_prepared(unit.config.key_types, pid, contact))
        made.created_at_us = contact.created_at_us
    unit.load([pid for pid, _ in missing])
    unit.flush()
    return len(missing)


def _prepared(types: dict[str, KeyType], pid: bytes, contact: ContactState) -> PreparedContact:
    key_type = types.get(contact.type) or KeyType(contact.type)
    invalid = contact.invalid_reason
    if not invalid and key_type.is_blocked(contact.value):
        invalid = "BLOCKED"  # a contact's invalid reason (SPEC 2.4), not an error's
    return PreparedContact(key_type, contact.source, contact.value, invalid, pid)
