"""Records: what a source sends, and how a write applies it (SPEC 3.1-3.6).

A batch of records is applied in canonical order (SPEC 3.2). A record that is
the newest evidence of every contact it names takes the incremental path
(:meth:`LinkGraph.apply <idlink.domain.linking.LinkGraph.apply>` on the loaded
graph); any other record (older, replaced, deleted) is stored and its region
is replayed once for the whole batch, from nothing, which is canonical
whatever was stored. The use cases here run inside a unit of work
(:class:`~idlink.domain.unit.AccountUnit`); the engine opens it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from idlink.domain import collector
from idlink.domain.contacts import (
    MAX_RECORD_ID_BYTES,
    MAX_SOURCE_BYTES,
    ContactKey,
    PreparedContact,
    check_text,
    prepare_contact,
    prepare_contacts,
)
from idlink.domain.linking import APPLIED
from idlink.domain.reads import AccountView
from idlink.domain.unit import AccountUnit
from idlink.domain.views import CREATED, FOUND, Resolution
from idlink.errors import InvalidArgument, NotFound
from idlink.store import codec
from idlink.store.txn import ContactPolicyState, RecordState

MAX_CONTACTS_PER_RECORD = 64
MANUAL_SOURCE = "manual"


@dataclass(frozen=True, slots=True)
class RecordInput:
    """A record as a source sends it."""

    source: str
    record_id: str
    contacts: Sequence[ContactKey]
    observed_at_us: int
    deleted: bool = False


@dataclass(slots=True)
class LinkResult:
    outcome: int
    customer_pid: bytes
    contact_pids: list[bytes]
    conflict_customer_pids: list[bytes] = field(default_factory=list)


# -- applying records -------------------------------------------------------------------------


def apply_batch(
    unit: AccountUnit, records: Sequence[RecordInput], prepared: Sequence[Sequence[PreparedContact]]
) -> list[LinkResult]:
    last: dict[tuple[str, str], int] = {}
    for i, record in enumerate(records):
        last[(record.source, record.record_id)] = i
    order = sorted(
        last.values(),
        key=lambda i: codec.canonical_key(
            records[i].observed_at_us, records[i].source, records[i].record_id
        ),
    )
    outcomes: dict[int, tuple[int, list[tuple[bytes, bytes]]]] = {}
    for i in order:
        outcomes[i] = _apply_one(unit, records[i], prepared[i])
    graph = unit.flush_evidence()
    if not unit.deferred:
        if graph is not None:
            unit.write_components(graph.components(), graph.nodes)
    else:
        # One replay for every record of the batch that needed one: a closed
        # region replayed from nothing is canonical whatever was stored.
        region = unit.region(unit.deferred, unit.changed_from)
        if graph is not None:
            # The batch is one operation (SPEC 3.5): customers the replay
            # works out again keep the PIDs they had before the batch, so
            # the fast path's customers there are not written in between.
            while True:
                inside = [c for c in graph.components() if any(n.pid in region.seen for n in c[0])]
                missing = {n.pid for c in inside for n in c[0]} - region.seen
                if not missing:
                    break
                region = unit.region(unit.deferred | missing, unit.changed_from)
            outside = [c for c in graph.components() if not any(n.pid in region.seen for n in c[0])]
            unit.write_components(outside, [n for c in outside for n in c[0]])
            # A contact the region holds but does not replay all records of
            # may have been named by a fast-path record of this batch.
            for c in inside:
                for n in c[0]:
                    if n.pid in region.partial:
                        region.first_seen[n.pid] = (n.first_key, n.position)
        replayed = unit.replay(region)
        unit.deferred = set()
        for i in order:
            record = records[i]
            key = codec.canonical_key(record.observed_at_us, record.source, record.record_id)
            if key in replayed and not record.deleted:
                outcomes[i] = (replayed[key].outcome, replayed[key].refused)
    results = []
    for i, record in enumerate(records):
        outcome, refused = outcomes[last[(record.source, record.record_id)]]
        pids = [p.pid for p in prepared[i]]
        results.append(_result(unit, outcome, pids, refused))
    return results


def _apply_one(
    unit: AccountUnit, record: RecordInput, prepared: Sequence[PreparedContact]
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Apply one record of a batch now, or store it and defer it to the batch's replay."""
    key = codec.canonical_key(record.observed_at_us, record.source, record.record_id)
    stored = unit.txn.get_record(record.source, record.record_id)
    if record.deleted:
        if stored is not None:
            unit.remove_record(stored)
        return APPLIED, []
    pids = list(dict.fromkeys([p.pid for p in prepared]))
    for p in prepared:
        unit.ensure_contact(p)
    if stored is not None:
        if stored.observed_at_us == record.observed_at_us and list(stored.contact_pids) == pids:
            return stored.outcome, _refused_pairs(stored)
        unit.remove_record(stored)
    elif unit.load(pids).is_newest(key, pids):
        assert unit.graph is not None
        result = unit.graph.apply(key, pids)
        unit.pending[key] = (_new_record_state(unit, record, pids), result)
        unit.note_change(key, pids)
        return result.outcome, result.refused
    unit.defer_record(key, _new_record_state(unit, record, pids))
    return APPLIED, []  # replaced by the replay's outcome


def _new_record_state(unit: AccountUnit, record: RecordInput, pids: list[bytes]) -> RecordState:
    return RecordState(
        source=record.source,
        record_id=record.record_id,
        observed_at_us=record.observed_at_us,
        contact_pids=pids,
        author=unit.actor,
        stored_at_us=unit.now,
    )


def delete_stored(unit: AccountUnit, source: str, record_id: str) -> None:
    stored = unit.txn.get_record(source, record_id)
    if stored is None:
        return
    unit.remove_record(stored)
    unit.replay_region(unit.deferred, unit.changed_from)
    unit.deferred = set()


def _result(
    unit: AccountUnit, outcome: int, pids: list[bytes], refused: list[tuple[bytes, bytes]]
) -> LinkResult:
    customer = b""
    for pid in pids:
        contact = unit.contact(pid)
        if contact is not None and unit.usable(pid):
            customer = contact.customer_pid
            break
    if not customer and pids:
        contact = unit.contact(pids[0])
        customer = contact.customer_pid if contact is not None else b""
    conflicts: list[bytes] = []
    for pair in refused:
        for pid in pair:
            contact = unit.contact(pid)
            if contact is not None and contact.customer_pid not in conflicts:
                conflicts.append(contact.customer_pid)
    return LinkResult(outcome, customer, pids, conflicts)


def _refused_pairs(record: RecordState) -> list[tuple[bytes, bytes]]:
    pids = list(record.conflict_contact_pids)
    return [(pids[i], pids[i + 1]) for i in range(0, len(pids) - 1, 2)]


# -- the use cases (each runs in one unit of work) ----------------------------------------------


def ingest(unit: AccountUnit, secret: bytes, records: Sequence[RecordInput]) -> list[LinkResult]:
    """Apply a batch of checked records; results in input order."""
    flat = prepare_contacts(
        secret,
        unit.config,
        [
            (key, f"records[{i}].contacts[{j}]")
            for i, record in enumerate(records)
            for j, key in enumerate(record.contacts)
        ],
    )
    prepared: list[list[PreparedContact]] = []
    start = 0
    for record in records:
        prepared.append(flat[start : start + len(record.contacts)])
        start += len(record.contacts)
    # A batch writes a contact, a customer or a counter many times over: the
    # store keeps the last value of each key and writes it once, sealed once.
    unit.txn.buffer_writes()
    with collector.paused():
        results = apply_batch(unit, records, prepared)
        unit.txn.flush_writes()
    return results


def delete_record(unit: AccountUnit, source: str, record_id: str) -> None:
    """Remove a record's evidence; customers it held together split (SPEC 3.6)."""
    if unit.txn.get_record(source, record_id) is None:
        raise NotFound(f"record {source}/{record_id} not found")
    delete_stored(unit, source, record_id)


def set_contact_policy(
    unit: AccountUnit,
    secret: bytes,
    key: ContactKey,
    do_not_link: bool | None,
    never_isolate: bool | None,
) -> bytes:
    """Set or clear do-not-link / never-isolate on a contact, seen or not (SPEC 2.5)."""
    txn = unit.txn
    prepared = prepare_contact(secret, unit.config, key)
    policy = txn.get_policy(prepared.pid) or ContactPolicyState()
    before = (policy.do_not_link, policy.never_isolate)
    if do_not_link is not None:
        policy.do_not_link = do_not_link
    if never_isolate is not None:
        policy.never_isolate = never_isolate
    if (policy.do_not_link, policy.never_isolate) == before:
        return prepared.pid
    policy.set_by = unit.actor
    policy.set_at_us = unit.now
    existed = txn.get_policy(prepared.pid) is not None
    if policy.do_not_link or policy.never_isolate:
        txn.put_policy(prepared.pid, policy)
        if not existed:
            txn.add_policy_count(1)
    else:
        txn.delete_policy(prepared.pid)
        if existed:
            txn.add_policy_count(-1)
    unit.has_policies = txn.policy_count() > 0
    if txn.get_contact(prepared.pid) is not None:
        unit.replay_region({prepared.pid})
        replayed = txn.get_contact(prepared.pid)
        assert replayed is not None
        unit.emit(
            "policy_changed",
            replayed.customer_pid,
            detail=f"do_not_link={policy.do_not_link} never_isolate={policy.never_isolate}",
        )
    return prepared.pid


def manual_record(
    keys: Sequence[ContactKey], observed_at_us: int, record_id: str = ""
) -> RecordInput:
    """The record of an explicit merge; deleting it unmerges (SPEC 3.6)."""
    if len(keys) < 2:
        raise InvalidArgument("contacts needs at least two contacts to merge", field="contacts")
    return RecordInput(MANUAL_SOURCE, record_id or uuid.uuid4().hex, list(keys), observed_at_us)


def check_record(record: RecordInput, field: str, good_sources: set[str] | None = None) -> None:
    """Refuse a record that cannot be applied, naming the field (``records[3].contacts``).

    ``good_sources``: sources that passed this check already (a batch names few);
    a source that passes is added to it.
    """
    if good_sources is None or record.source not in good_sources:
        check_text(record.source, f"{field}.source", MAX_SOURCE_BYTES)
        if good_sources is not None:
            good_sources.add(record.source)
    check_text(record.record_id, f"{field}.record_id", MAX_RECORD_ID_BYTES)
    if record.deleted:
        return
    if not record.contacts:
        raise InvalidArgument(
            f"{field}.contacts must name at least one contact", field=f"{field}.contacts"
        )
    if len(record.contacts) > MAX_CONTACTS_PER_RECORD:
        raise InvalidArgument(
            f"{field}.contacts names more than {MAX_CONTACTS_PER_RECORD} contacts",
            field=f"{field}.contacts",
        )


def check_names(source: str, record_id: str) -> None:
    check_text(source, "source", MAX_SOURCE_BYTES)
    check_text(record_id, "record_id", MAX_RECORD_ID_BYTES)


def resolve_creating(unit: AccountUnit, secret: bytes, key: ContactKey) -> Resolution:
    """Resolve, storing the contact first when it is new (``create_if_missing``)."""
    prepared = prepare_contact(secret, unit.config, key)
    created = unit.contact(prepared.pid) is None
    if created:
        unit.ensure_contact(prepared)
        unit.load([prepared.pid])
        unit.flush()
    answer = AccountView(unit.txn, unit.config).resolve(prepared)
    if created and answer.status == FOUND:
        answer.status = CREATED
    return answer
