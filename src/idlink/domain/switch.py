"""A generation switched into a live account without downtime (``idlink load``).

The steps, each its own write transaction or several (docs/operations.md,
"Loading a generation"); 1 and 6 are in :mod:`staging`, 3 and 4 in
:mod:`catchup`, 5 here, and this module names them all:

1. :func:`begin`: a hidden *staging* account beside the live one, named
   ``A`` + ``"\\0staging"`` (users cannot send the name), with a fresh account
   id (ids are a counter, so it sorts after every existing one) and the live
   account's configuration, schema and security policy. A staging account a
   crashed load left is dropped first. A generation of an older account id
   (a later load switched since its export) or made before a configuration
   change is refused here (and again in the switch, with an erasure since
   the export).
2. The generation's derived rows are written into the staging account
   (``generations.materialize.write_generation``).
3. :func:`copy_base`: the non-derived data of the live account is copied:
   contact policies, engagements, pins, history, the change feed (the same
   sequence numbers), redirects, tombstones, the audit log and its counters,
   a page a transaction.
4. :func:`catch_up`: rounds of what the live account's record log holds
   after the export (records written or deleted, contact policies,
   engagements), applied to the staging account through the domain's own
   record path (``records.apply_batch``: late records replay their regions,
   deletions delete).
5. :func:`switch`: one write transaction applies the last of the log, copies
   what the feed and the audit log gained since the copy, writes the
   switch's change events (the live customers against the staging ones:
   merged, split, created, updated; worked out ahead on a read snapshot by
   :func:`plan_switch`, only what changed since read again) continuing the
   live feed, and points the account's name at the staging id. Readers see one snapshot: the old
   account or the new one, never a mix.
6. :func:`drop_pending`: the old account id's data goes in batches of write
   transactions; a meta marker lists the ids being dropped, so a later load
   or ``idlink compact`` finishes an interrupted drop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from idlink.domain.accounts import config_of
from idlink.domain.catchup import (
    FEED_OFFSET,
    FINAL_ENTRIES,
    MAX_ROUNDS,
    ROUND_ENTRIES,
    apply_entries,
    catch_up,
    copy_audit,
    copy_base,
    copy_feed,
    stage_records,
    sync_pins,
)
from idlink.domain.engine import IdentityEngine
from idlink.domain.pids import follow_redirects, merge_profile
from idlink.domain.staging import (
    ACTOR,
    FEED_PAGE,
    Baseline,
    GenerationTooOld,
    Staging,
    abandon,
    accounts_of,
    begin,
    copy_settings,
    drop_pending,
    pending_drops,
    refuse_if_erased,
    refuse_if_older,
    staging_accounts,
)
from idlink.domain.unit import AccountUnit
from idlink.store.txn import AccountTxn, CustomerState, Profile, Txn

__all__ = [
    "ACTOR",
    "FINAL_ENTRIES",
    "MAX_ROUNDS",
    "Baseline",
    "GenerationTooOld",
    "Staging",
    "SwitchPlan",
    "SwitchReport",
    "abandon",
    "begin",
    "catch_up",
    "copy_base",
    "drop_pending",
    "pending_drops",
    "plan_switch",
    "stage_records",
    "staging_accounts",
    "switch",
]


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


# -- the switch -------------------------------------------------------------------------------


def switch(engine: IdentityEngine, staging: Staging) -> SwitchReport:
    """The one transaction that applies the last delta and points the name at the staging id."""
    now = engine.clock()
    started = time.perf_counter()
    plan = plan_switch(engine, staging)
    planned = time.perf_counter()

    def run(txn: Txn) -> SwitchReport:
        live, staged = accounts_of(txn, staging)
        refuse_if_older(live, staging.account, staging.baseline)
        refuse_if_erased(live, staging.account, staging.baseline.change_seq)
        report = SwitchReport(new_account_id=staging.staging_id, old_account_id=staging.live_id)
        applied = staging.applied_log_seq
        while True:
            entries = live.log_after(applied, ROUND_ENTRIES)
            if not entries:
                break
            report.caught_up_records += apply_entries(engine, live, staged, entries)
            applied = entries[-1].seq
        # Customers named since the plan: by the live feed, or by the last catch-up.
        touched = _named_after(live, plan.live_seq) | _named_after(staged, plan.staged_seq)
        _drop_own_events(staged)
        copy_feed(live, staged, staging.copied_change_seq, history=True)
        copy_audit(live, staged, staging.copied_audit_seq)
        counters = live.counters()
        staged.set_counter("changes", counters["changes"])
        staged.set_counter("audit", counters["audit"])
        mine = staged.counters()
        for name in ("contacts", "customers"):
            staged.set_counter(name, max(counters[name], mine[name]))
        # Tombstones: none since the copy (an erasure since the export refuses the switch).
        copy_settings(live, staged)
        state = staged.get_config()
        assert state is not None
        unit = AccountUnit(staged, config_of(state), ACTOR, now)
        report.first_seq = counters["changes"] + 1
        report.events = _switch_events(live, staged, unit, plan.fresh(), touched)
        report.last_seq = staged.change_seq()
        sync_pins(live, staged)
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
        live, staged = accounts_of(txn, staging)
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
        events = txn.changes_after(seq, FEED_PAGE)
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
