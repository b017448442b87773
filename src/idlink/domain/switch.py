"""A generation switched into a live account without downtime (``idlink load``).

The steps, each its own write transaction (docs/operations.md, "Loading a
generation"):

1. :func:`begin`: a hidden *staging* account beside the live one, named
   ``A`` + ``"\\0staging"`` (users cannot send the name), with a fresh account
   id (ids are a counter, so it sorts after every existing one) and the live
   account's configuration, schema and security policy. A staging account a
   crashed load left is dropped first. A generation of an older account id
   (a later load switched since its export) or made before a configuration
   change is refused here.
2. The generation's derived rows are written into the staging account
   (``generations.materialize.write_generation``).
3. :func:`copy_base`: the non-derived data of the live account is copied:
   contact policies, engagements, pins, history, the change feed (the same
   sequence numbers), redirects, tombstones, the audit log and its counters.
4. :func:`catch_up`: rounds of what the live account's record log holds
   after the export (records written or deleted, contact policies,
   engagements), applied to the staging account through the domain's own
   record path (``records.apply_batch``: late records replay their regions,
   deletions delete).
5. :func:`switch`: one write transaction applies the last of the log, copies
   what the feed and the audit log gained since the copy, writes the
   switch's change events (the live customers against the staging ones:
   merged, split, created, updated) continuing the live feed, and points the
   account's name at the staging id. Readers see one snapshot: the old
   account or the new one, never a mix.
6. :func:`drop_pending`: the old account id's data goes in batches of write
   transactions; a meta marker lists the ids being dropped, so a later load
   or ``idlink compact`` finishes an interrupted drop.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from idlink.domain import records
from idlink.domain.accounts import Accounts, config_of, is_staging_name, staging_name
from idlink.domain.contacts import PreparedContact
from idlink.domain.engine import IdentityEngine
from idlink.domain.keytypes import KeyType
from idlink.domain.pids import follow_redirects, merge_profile
from idlink.domain.unit import AccountUnit
from idlink.errors import FailedPrecondition, NotFound
from idlink.store.txn import (
    LOG_DELETED,
    LOG_ENGAGEMENT,
    LOG_POLICY,
    LOG_RECORD,
    AccountTxn,
    ContactState,
    CustomerState,
    LogEntry,
    Profile,
    RecordState,
    Txn,
)

ACTOR = "load"
# The staging account's own change events (the catch-up's) are numbered from here,
# apart from the copied feed; the switch removes them and writes its own events.
FEED_OFFSET = 1 << 62
ROUND_ENTRIES = 20_000  # record log entries per catch-up transaction
FINAL_ENTRIES = 2_000  # the switch happens once a round leaves fewer than this
MAX_ROUNDS = 50
COPY_PAGE = 20_000  # entries of the live account copied per transaction
DROP_BATCH = 20_000  # entries deleted per transaction when an old account id is dropped
_FEED_PAGE = 10_000


class GenerationTooOld(FailedPrecondition):
    """A generation of an account id a later load replaced, or before a configuration change."""

    reason = "GENERATION_TOO_OLD"


@dataclass(slots=True)
class Baseline:
    """Where the live account stood when the generation's export read it."""

    change_seq: int
    record_log_seq: int
    account_id: int | None = None
    config_version: int | None = None
    export_id: str = ""


@dataclass(slots=True)
class Staging:
    """A load in progress: the live account, its staging account, how far the copy went."""

    account: str
    name: str
    live_id: int
    staging_id: int
    baseline: Baseline
    # The live account's change feed and audit log copied up to these.
    copied_change_seq: int = 0
    copied_audit_seq: int = 0
    # The live account's record log applied up to this.
    applied_log_seq: int = 0


@dataclass(slots=True)
class SwitchReport:
    """What the switch told the change feed, and the catch-up that led to it."""

    events: dict[str, int] = field(default_factory=dict)
    first_seq: int = 0
    last_seq: int = 0
    caught_up_records: int = 0
    rounds: int = 0
    new_account_id: int = 0
    old_account_id: int = 0
    # The plan's read, and the switch transaction itself (the writers wait for it alone).
    plan_seconds: float = 0.0
    write_seconds: float = 0.0


# -- 1. the staging account ---------------------------------------------------------------------


def begin(engine: IdentityEngine, account: str, baseline: Baseline) -> Staging:
    """Create the staging account of ``account`` (a stale one is dropped first)."""
    if is_staging_name(account):
        raise FailedPrecondition(f"{account!r} is a staging account")
    now = engine.clock()

    def run(txn: Txn) -> Staging:
        name = staging_name(account)
        stale = txn.account_id(name)
        if stale is not None:
            txn.forget_account_name(name)
            txn.mark_dropping(stale)
        live_id = txn.account_id(account)
        if live_id is None:
            live_id = Accounts().find_or_create(txn, account, now).account_id
        live = txn.account(live_id)
        refuse_if_older(live, account, baseline)
        state = live.get_config()
        assert state is not None
        staging_id = txn.create_account_id(name)
        staged = txn.account(staging_id)
        state.account_id = staging_id
        state.name = name
        staged.put_config(state)
        _copy_settings(live, staged)
        return Staging(account, name, live_id, staging_id, baseline)

    return engine.write_keys(run)


def refuse_if_older(live: AccountTxn, account: str, baseline: Baseline) -> None:
    """Refuse a generation older than the live account, or made before a configuration change."""
    if baseline.account_id is not None and baseline.account_id != live.account_id:
        raise GenerationTooOld(
            f"the generation's export is of an earlier generation of account {account!r} "
            f"(account id {baseline.account_id}, now {live.account_id}: a later load "
            "switched since): export again"
        )
    marker = live.get_generation()
    if marker is not None and baseline.account_id is None:
        switched_at = int(json.loads(marker).get("switched_at_change_seq", 0))
        if baseline.change_seq < switched_at:
            raise GenerationTooOld(
                f"the generation's export (change {baseline.change_seq}) is older than the "
                f"load of account {account!r} at change {switched_at}: export again"
            )
    if baseline.config_version is not None and baseline.config_version != live.config_version():
        raise FailedPrecondition(
            f"the configuration of account {account!r} (key types or policy) changed since "
            "the export: export again and recluster",
            reason="CONFIGURATION_CHANGED",
        )
    if baseline.record_log_seq > live.record_log_seq():
        raise GenerationTooOld(
            f"the generation's export is ahead of account {account!r}'s record log "
            f"({baseline.record_log_seq} > {live.record_log_seq()}): not an export of this store"
        )


def refuse_if_erased(live: AccountTxn, account: str, since: int) -> None:
    """Refuse the switch when a customer was erased after the export.

    The generation (and the staging account) still hold the erased contacts;
    the erasure must not come back with the switch. The staging account is
    dropped and the load can be run again from a new export.
    """
    seq = since
    while True:
        events = live.changes_after(seq, _FEED_PAGE)
        if not events:
            return
        for event in events:
            if event.kind == "erased":
                raise FailedPrecondition(
                    f"a customer of account {account!r} was erased after the export "
                    f"(change {event.seq}): export again",
                    reason="ERASED_SINCE_EXPORT",
                )
            seq = event.seq


def _copy_settings(live: AccountTxn, staged: AccountTxn) -> None:
    schema = live.get_schema()
    if schema is not None and schema != staged.get_schema():
        staged.put_schema(schema)
    policy = live.get_security_policy()
    if policy is not None and policy != staged.get_security_policy():
        staged.put_security_policy(policy)


def _accounts(txn: Txn, staging: Staging) -> tuple[AccountTxn, AccountTxn]:
    if txn.account_id(staging.name) != staging.staging_id:
        raise FailedPrecondition(
            f"the staging account of {staging.account!r} was replaced (another load started)"
        )
    if txn.account_id(staging.account) != staging.live_id:
        raise FailedPrecondition(f"account {staging.account!r} was switched by another load")
    return txn.account(staging.live_id), txn.account(staging.staging_id)


# -- 3. the non-derived data ---------------------------------------------------------------------


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
        live, staged = _accounts(txn, staging)
        for survivor, absorbed in merges:
            for pid in absorbed:
                if staged.get_customer(pid) is None:
                    staged.put_redirect(pid, survivor)
        _sync_pins(live, staged)
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
                live, staged = _accounts(txn, staging)
                items, following = live.page(kind, after, page)
                for item in items:
                    _put_copied(staged, kind, item)
                return len(items), following

            copied, token = engine.write_keys(copy_page)
            if kind == "policies":
                policies += copied

    def feed_page(txn: Txn, after: int) -> int:
        live, staged = _accounts(txn, staging)
        last = after
        for event in live.changes_after(after, page):
            if event.seq > change_seq:
                break
            staged.append_change(event)
            last = event.seq
        return last

    copied_feed = 0
    while copied_feed < change_seq:
        reached = engine.write_keys(functools.partial(feed_page, after=copied_feed))
        if reached == copied_feed:
            break
        copied_feed = reached

    def audit_page(txn: Txn, after: int) -> int:
        live, staged = _accounts(txn, staging)
        last = after
        for event in itertools.islice(live.audit_after(after), page):
            if event.seq > audit_seq:
                break
            staged.append_audit(event)
            last = event.seq
        return last

    copied_audit = 0
    while copied_audit < audit_seq:
        reached = engine.write_keys(functools.partial(audit_page, after=copied_audit))
        if reached == copied_audit:
            break
        copied_audit = reached

    def count(txn: Txn) -> None:
        _, staged = _accounts(txn, staging)
        staged.set_counter("policies", policies)

    engine.write_keys(count)
    staging.copied_change_seq, staging.copied_audit_seq = copied_feed, copied_audit
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


def _copy_feed(live: AccountTxn, staged: AccountTxn, after: int, *, history: bool) -> int:
    """Copy change events after ``after``, with their history entries when ``history``."""
    last = after
    while True:
        events = live.changes_after(last, _FEED_PAGE)
        if not events:
            return last
        for event in events:
            staged.append_change(event)
            if history:
                staged.append_history(event.customer_pid, event)
                for other in event.other_customer_pids:
                    staged.append_history(other, event)
            last = event.seq


def _copy_audit(live: AccountTxn, staged: AccountTxn, after: int) -> int:
    last = after
    for event in live.audit_after(after):
        staged.append_audit(event)
        last = event.seq
    return last


def _sync_pins(live: AccountTxn, staged: AccountTxn) -> None:
    """The staging pins are the live ones; a pin of a customer merged away follows its survivor."""
    for customer, engagement_id in list(staged.iter_pins()):
        staged.delete_pin(customer, engagement_id)
    for customer, engagement_id in live.iter_pins():
        target = customer
        if staged.get_customer(customer) is None:
            target, _ = follow_redirects(staged, customer)
        staged.put_pin(target, engagement_id)


# -- 4. the catch-up -----------------------------------------------------------------------------


def catch_up(engine: IdentityEngine, staging: Staging, limit: int = ROUND_ENTRIES) -> int:
    """One round: apply up to ``limit`` record log entries; how many were left behind it."""

    def run(txn: Txn) -> tuple[int, int]:
        live, staged = _accounts(txn, staging)
        entries = live.log_after(staging.applied_log_seq, limit)
        _apply_entries(engine, live, staged, entries)
        applied = entries[-1].seq if entries else staging.applied_log_seq
        return applied, max(0, live.record_log_seq() - applied)

    staging.applied_log_seq, left = engine.write_keys(run)
    return int(left)


def _apply_entries(
    engine: IdentityEngine, live: AccountTxn, staged: AccountTxn, entries: Sequence[LogEntry]
) -> int:
    """Apply log entries of the live account to the staging account; records applied."""
    last_of: dict[bytes, LogEntry] = {}
    policies: set[bytes] = set()
    engagement_ids: set[bytes] = set()
    for entry in entries:
        if entry.kind in (LOG_RECORD, LOG_DELETED):
            last_of[entry.body] = entry
        elif entry.kind == LOG_POLICY:
            policies.add(entry.body)
        elif entry.kind == LOG_ENGAGEMENT:
            engagement_ids.add(entry.body)
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


def _prepared(types: dict[str, KeyType], pid: bytes, contact: ContactState) -> PreparedContact:
    key_type = types.get(contact.type) or KeyType(contact.type)
    reason = contact.invalid_reason
    if not reason and key_type.is_blocked(contact.value):
        reason = "BLOCKED"
    return PreparedContact(key_type, contact.source, contact.value, reason, pid)


# -- 5. the switch -------------------------------------------------------------------------------


def switch(engine: IdentityEngine, staging: Staging) -> SwitchReport:
    """The one transaction that applies the last delta and points the name at the staging id."""
    now = engine.clock()
    started = time.perf_counter()
    plan = plan_switch(engine, staging)
    planned = time.perf_counter()

    def run(txn: Txn) -> SwitchReport:
        live, staged = _accounts(txn, staging)
        refuse_if_older(live, staging.account, staging.baseline)
        refuse_if_erased(live, staging.account, staging.baseline.change_seq)
        report = SwitchReport(new_account_id=staging.staging_id, old_account_id=staging.live_id)
        applied = staging.applied_log_seq
        while True:
            entries = live.log_after(applied, ROUND_ENTRIES)
            if not entries:
                break
            report.caught_up_records += _apply_entries(engine, live, staged, entries)
            applied = entries[-1].seq
        # Customers named since the plan: by the live feed, or by the last catch-up.
        touched = _named_after(live, plan.live_seq) | _named_after(staged, plan.staged_seq)
        _drop_own_events(staged)
        _copy_feed(live, staged, staging.copied_change_seq, history=True)
        _copy_audit(live, staged, staging.copied_audit_seq)
        counters = live.counters()
        staged.set_counter("changes", counters["changes"])
        staged.set_counter("audit", counters["audit"])
        mine = staged.counters()
        for name in ("contacts", "customers"):
            staged.set_counter(name, max(counters[name], mine[name]))
        for pid, at_us in live.iter_tombstones():
            if staged.tombstone(pid) is None:
                staged.put_tombstone(pid, at_us)
        _copy_settings(live, staged)
        state = staged.get_config()
        assert state is not None
        unit = AccountUnit(staged, config_of(state), ACTOR, now)
        report.first_seq = counters["changes"] + 1
        report.events = _switch_events(live, staged, unit, plan.fresh(), touched)
        report.last_seq = staged.change_seq()
        _sync_pins(live, staged)
        # Point the name at the staging id; the old id is dropped afterwards.
        txn.point_account(staging.account, staging.staging_id)
        txn.forget_account_name(staging.name)
        state.name = staging.account
        staged.put_config(state)
        staged.put_generation(
            json.dumps(
                {
                    "export_id": staging.baseline.export_id,
                    "export_change_seq": staging.baseline.change_seq,
                    "switched_at_change_seq": report.last_seq,
                    "replaced_account_id": staging.live_id,
                    "at_us": now,
                },
                sort_keys=True,
            ).encode()
        )
        txn.mark_dropping(staging.live_id)
        return report

    report: SwitchReport = engine.write_keys(run)
    report.plan_seconds = round(planned - started, 3)
    report.write_seconds = round(time.perf_counter() - planned, 3)
    engine.notify()
    return report


def _drop_own_events(staged: AccountTxn) -> None:
    """Remove the catch-up's own change events (numbered from FEED_OFFSET) and their history."""
    for event in staged.changes_after(FEED_OFFSET, 1 << 62):
        staged.delete_change(event.seq)
        for pid in (event.customer_pid, *event.other_customer_pids):
            staged.delete_history_entry(pid, event.seq)


@dataclass(slots=True)
class _Decision:
    """What the switch tells the feed of one staging customer, and its profile to write."""

    kind: str  # "" when the customer did not change
    others: list[bytes]
    added: list[bytes]
    removed: list[bytes]
    profile: Profile | None  # None: the staging profile is right as it is


@dataclass(slots=True)
class SwitchPlan:
    """The switch's events worked out ahead, in a read transaction, for the final one to check.

    The switch transaction reads again only the customers the live feed or the
    catch-up named after this plan's snapshot, so it does not read every
    customer of both accounts while the writers wait.
    """

    live_seq: int
    staged_seq: int
    before: dict[bytes, CustomerState]
    after: dict[bytes, CustomerState]
    absorbed: dict[bytes, list[bytes]]
    decisions: dict[bytes, _Decision]

    def fresh(self) -> SwitchPlan:
        """A copy whose maps the switch may change (a retried transaction starts again)."""
        return SwitchPlan(
            self.live_seq,
            self.staged_seq,
            dict(self.before),
            dict(self.after),
            dict(self.absorbed),
            dict(self.decisions),
        )


def plan_switch(engine: IdentityEngine, staging: Staging) -> SwitchPlan:
    """Work out the switch's events on one read snapshot (before the switch transaction)."""
    with engine.read_keys() as txn:
        live, staged = _accounts(txn, staging)
        before = dict(live.iter_customers())
        after = dict(staged.iter_customers())
        absorbed = _absorbed(live, staged, before, after, set(before) - set(after))
        decisions = {pid: _decide(pid, before, after, absorbed) for pid in after}
        return SwitchPlan(
            live.change_seq(), staged.change_seq(), before, after, absorbed, decisions
        )


def _named_after(txn: AccountTxn, seq: int) -> set[bytes]:
    named: set[bytes] = set()
    while True:
        events = txn.changes_after(seq, _FEED_PAGE)
        if not events:
            return named
        for event in events:
            named.add(bytes(event.customer_pid))
            named.update(bytes(p) for p in event.other_customer_pids)
            seq = event.seq


def _absorbed(
    live: AccountTxn,
    staged: AccountTxn,
    before: dict[bytes, CustomerState],
    after: dict[bytes, CustomerState],
    gone: Iterable[bytes],
) -> dict[bytes, list[bytes]]:
    """Live customers the staging account no longer has, by the staging customer they went to."""
    absorbed: dict[bytes, list[bytes]] = {}
    for pid in gone:
        if live.tombstone(pid) is not None:
            continue
        target, _ = follow_redirects(staged, pid)
        if target not in after:
            target = _first_home(staged, before[pid])
            if not target:
                continue
        absorbed.setdefault(target, []).append(pid)
    return absorbed


def _decide(
    pid: bytes,
    before: dict[bytes, CustomerState],
    after: dict[bytes, CustomerState],
    absorbed: dict[bytes, list[bytes]],
) -> _Decision:
    """One staging customer against the live ones (see :func:`_switch_events`)."""
    state = after[pid]
    others = sorted(absorbed.get(pid, []))
    old = before.get(pid)
    profile: Profile | None = None
    if old is not None:
        members_before = list(old.contact_pids)
        profile = Profile()
        profile.CopyFrom(old.profile)
        for other in others:
            merge_profile(profile, before[other].profile)
        if others:
            # As a merge online tells it: contacts added and removed against the survivor.
            kind = "merged"
        elif set(old.contact_pids) != set(state.contact_pids):
            kind = "updated"
        else:
            kind = ""
    else:
        members_before = []
        if state.split_from and state.split_from in before:
            profile = Profile()
            profile.CopyFrom(before[state.split_from].profile)
            kind = "split"
            others = [state.split_from]
        else:
            kind = "merged" if others else "created"
            if others:
                profile = Profile()
                for other in others:
                    merge_profile(profile, before[other].profile)
    if profile is not None and profile == state.profile:
        profile = None
    had, has = set(members_before), set(state.contact_pids)
    return _Decision(
        kind,
        others,
        [c for c in state.contact_pids if c not in had],
        [c for c in dict.fromkeys(members_before) if c not in has],
        profile,
    )


def _switch_events(
    live: AccountTxn, staged: AccountTxn, unit: AccountUnit, plan: SwitchPlan, touched: set[bytes]
) -> dict[str, int]:
    """The change events of the switch: each live customer against the staging ones.

    A staging customer with a live PID is ``merged`` (live customers that are
    gone now redirect to it), ``updated`` (other contacts) or unchanged; a
    new PID is ``split`` (from the live customer it names as its origin) or
    ``created``. Profiles are the live ones, as a merge or split online
    carries them: the survivor's values win, its gaps filled from the others.
    The plan holds every decision at its snapshot; the customers named since
    (``touched``) are read again here, and so is every decision they enter.
    """
    before, after = plan.before, plan.after
    for pid in touched:
        found = live.get_customer(pid)
        if found is None:
            before.pop(pid, None)
        else:
            before[pid] = found
        mine = staged.get_customer(pid)
        if mine is None:
            after.pop(pid, None)
        else:
            after[pid] = mine
    absorbed = _absorbed(live, staged, before, after, set(before) - set(after))
    again = {pid for pid in touched if pid in after}
    for target in set(absorbed) | set(plan.absorbed):
        now_gone, planned = absorbed.get(target, []), plan.absorbed.get(target, [])
        if sorted(now_gone) != sorted(planned) or any(o in touched for o in now_gone):
            again.add(target)
    again.update(pid for pid, state in after.items() if state.split_from in touched)
    decisions = plan.decisions
    for pid in list(decisions):
        if pid not in after:
            del decisions[pid]
    for pid in again | (set(after) - set(decisions)):
        if pid in after:
            decisions[pid] = _decide(pid, before, after, absorbed)
    for target, gone in absorbed.items():
        for pid in gone:
            if staged.get_redirect(pid) != target:
                staged.put_redirect(pid, target)
    counts: dict[str, int] = {}
    for pid in sorted(after, key=lambda p: after[p].created_seq):
        decision = decisions[pid]
        if decision.profile is not None:
            current = staged.get_customer(pid)
            assert current is not None
            current.profile.CopyFrom(decision.profile)
            staged.put_customer(pid, current)
        if not decision.kind:
            continue
        unit.emit(
            decision.kind,
            pid,
            others=decision.others,
            added=decision.added,
            removed=decision.removed,
            detail="generation load",
        )
        counts[decision.kind] = counts.get(decision.kind, 0) + 1
    return counts


def _first_home(staged: AccountTxn, state: CustomerState) -> bytes:
    """Where a live customer without a staging heir went: the customer of its first contact."""
    for pid in state.contact_pids:
        contact = staged.get_contact(pid)
        if contact is not None and contact.customer_pid:
            return bytes(contact.customer_pid)
    return b""


# -- 6. dropping old account ids -------------------------------------------------------------------


def drop_pending(engine: IdentityEngine, batch: int = DROP_BATCH) -> int:
    """Drop every account id marked as being dropped, ``batch`` entries per transaction.

    Returns the entries deleted. Resumable: the marker of an id goes only
    once nothing of it is left.
    """
    total = 0
    while True:

        def run(txn: Txn) -> tuple[int, bool]:
            pending = txn.dropping()
            if not pending:
                return 0, False
            account_id = pending[0]
            deleted = txn.account(account_id).drop_some(batch)
            if deleted < batch:
                txn.unmark_dropping(account_id)
            return deleted, True

        deleted, more = engine.write_keys(run)
        total += deleted
        if not more:
            return total


def abandon(engine: IdentityEngine, staging: Staging) -> None:
    """Give up a load before its switch: the staging account is hidden and dropped."""

    def run(txn: Txn) -> None:
        if txn.account_id(staging.name) == staging.staging_id:
            txn.forget_account_name(staging.name)
            txn.mark_dropping(staging.staging_id)

    engine.write_keys(run)
    drop_pending(engine)


def pending_drops(engine: IdentityEngine) -> list[int]:
    with engine.read_keys() as txn:
        return txn.dropping()


def staging_accounts(engine: IdentityEngine) -> list[tuple[str, int]]:
    """Staging accounts left in the store (a load running, or one that crashed)."""
    with engine.read_keys() as txn:
        return list(txn.iter_hidden_account_names())
