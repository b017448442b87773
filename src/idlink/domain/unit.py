"""The unit of work: one write to one account, as the engine gives it to an operation.

An :class:`AccountUnit` holds the account's part of the write transaction, its
configuration, the actor, the time of the operation and the change feed
(:meth:`AccountUnit.emit`). It also holds the part of the graph the operation
has loaded: records are applied on the incremental path when they are the
newest evidence of their region, and otherwise stored and replayed with their
region (SPEC 3.2). Every write of the domain goes through one
(:meth:`IdentityEngine.write <idlink.domain.engine.IdentityEngine.write>`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from idlink.domain import pids
from idlink.domain.contacts import PreparedContact, national_number, unusable_reason
from idlink.domain.keytypes import AccountConfig, KeyType
from idlink.domain.linking import LinkGraph, Node, StepResult
from idlink.store import codec
from idlink.store.txn import AccountTxn, ChangeEvent, ContactState, RecordState


class AccountUnit:
    """The unit of work of one write to one account.

    It holds the account's part of the write transaction (``txn``), its
    configuration, the actor the change feed names, the time of the operation
    (``now``, from the engine's clock, one value for the whole operation) and
    the contacts and graph the operation has loaded, with what it must write
    back. :meth:`IdentityEngine.write` builds one and gives it to the
    operation; the engine tells waiting readers when the transaction commits.
    """

    def __init__(self, txn: AccountTxn, config: AccountConfig, actor: str, now: int) -> None:
        self.txn = txn
        self.config = config
        self.actor = actor
        self.now = now
        self.graph: LinkGraph | None = None
        self.has_policies = txn.policy_count() > 0
        self.contacts: dict[bytes, ContactState] = {}
        self.pending: dict[bytes, tuple[RecordState, StepResult]] = {}
        # Contacts around records stored but not yet applied: replayed together.
        self.deferred: set[bytes] = set()
        # Contacts created by this operation: no record named them before it.
        self.created: set[bytes] = set()
        # Contacts created since this operation last wrote connections: none is stored.
        self.edgeless: set[bytes] = set()
        # The records this operation stored, replaced or removed (see ``region``):
        # the earliest canonical key among them, the keys of those stored for the
        # replay, the newest key stored per contact, and the contacts of removed ones.
        self.changed_from: bytes | None = None
        self.deferred_keys: set[bytes] = set()
        self.stored_newest: dict[bytes, bytes] = {}
        self.removed_contacts: list[list[bytes]] = []

    # -- contacts ---------------------------------------------------------------------

    def contact(self, pid: bytes) -> ContactState | None:
        found = self.contacts.get(pid)
        if found is None:
            found = self.txn.get_contact(pid)
            if found is not None:
                self.contacts[pid] = found
        return found

    def ensure_contact(self, prepared: PreparedContact) -> ContactState:
        """The stored contact, created (without a customer yet) if it is new."""
        found = self.contact(prepared.pid)
        if found is not None:
            return found
        reason = prepared.invalid_reason if prepared.invalid_reason != "BLOCKED" else ""
        contact = ContactState(
            type=prepared.key_type.name,
            source=prepared.source,
            value=prepared.cleaned,
            invalid_reason=reason,
            first_seen=self.txn.next_contact_seq(),
            created_at_us=self.now,
        )
        # Put now: the store's record log names a new contact at its first put
        # after next_contact_seq (a load's catch-up finds it by that entry).
        self.txn.put_contact(prepared.pid, contact)
        self.created.add(prepared.pid)
        self.edgeless.add(prepared.pid)
        national = national_number(prepared.key_type, prepared.cleaned)
        if national and not prepared.invalid_reason:
            self.txn.index_national(national, prepared.pid)
        self.contacts[prepared.pid] = contact
        return contact

    def usable(self, pid: bytes) -> bool:
        """Whether a stored contact may link (valid, not blocked, not do-not-link)."""
        contact = self.contact(pid)
        assert contact is not None
        policy = self.txn.get_policy(pid) if self.has_policies else None
        return not unusable_reason(
            contact.invalid_reason,
            self.config.key_types.get(contact.type) or KeyType(contact.type),
            contact.value,
            policy is not None and policy.do_not_link,
        )

    def node(self, pid: bytes, *, fresh: bool = False) -> Node:
        """How linking sees a stored contact; ``fresh`` drops derived state for a replay.

        Derived state is what the records decide: connections, isolation, a
        device's move, and where the contact was first seen (SPEC 3.8).
        """
        contact = self.contacts.get(pid) or self.contact(pid)
        assert contact is not None
        type_name = contact.type
        key_type = self.config.key_types.get(type_name) or KeyType(type_name)
        policy = self.txn.get_policy(pid) if self.has_policies else None
        # not unusable_reason(...), spelled out: this runs for every contact loaded.
        usable = not (
            contact.invalid_reason
            or (
                (key_type.blocked_values or key_type.blocked_patterns)
                and key_type.is_blocked(contact.value)
            )
            or (policy is not None and policy.do_not_link)
        )
        never_isolate = policy is not None and policy.never_isolate
        if fresh:
            return Node(
                pid,
                type_name,
                usable,
                key_type.reassignable,
                key_type.max_per_customer,
                contact.first_seen,
                key_type.priority,
                never_isolate=never_isolate,
                customer_pid=contact.customer_pid,
            )
        first_key, position = self.first_seen_at(pid, contact)
        return Node(
            pid,
            type_name,
            usable,
            key_type.reassignable,
            key_type.max_per_customer,
            contact.first_seen,
            key_type.priority,
            first_key,
            position,
            never_isolate,
            contact.connections,
            contact.isolated,
            contact.isolated_at,
            contact.isolated_connections,
            contact.moved_at,
            contact.customer_pid,
            contact.refused,
        )

    def first_seen_at(self, pid: bytes, contact: ContactState) -> tuple[bytes, int]:
        """Where a stored contact was first seen: its first record and its position there."""
        if contact.first_key or pid in self.created:
            return contact.first_key, contact.first_position
        # Written before first-seen keys were stored (or never named by a
        # record): the contact -> record index is in canonical order.
        keys = self.txn.record_keys_of(pid)
        record = self.txn.get_record_by_canonical(keys[0]) if keys else None
        if record is None:
            return b"", 0
        return keys[0], list(record.contact_pids).index(pid)

    # -- the incremental path -------------------------------------------------------------

    def _graph(self) -> LinkGraph:
        if self.graph is None:
            self.graph = LinkGraph(
                self.config.policy.max_contacts,
                self.config.policy.isolate_min_connections,
                stored_groups=self._stored_groups,
                stored_edge=self._stored_edge,
            )
        return self.graph

    def _stored_edge(self, a: bytes, b: bytes) -> bool:
        edgeless = self.edgeless
        return a not in edgeless and b not in edgeless and self.txn.has_edge(a, b)

    def _stored_groups(self, pids: Sequence[bytes]) -> Iterable[tuple[bytes, Sequence[bytes]]]:
        seen: set[bytes] = set()
        for pid in pids:
            for key in self.txn.record_keys_of(pid):
                if key in seen:
                    continue
                seen.add(key)
                record = self.txn.get_record_by_canonical(key)
                if record is not None:
                    yield key, list(record.group_pids)

    def load(self, pids: Iterable[bytes]) -> LinkGraph:
        graph = self._graph()
        for pid in pids:
            if pid in graph.index:
                continue
            contact = self.contact(pid)
            assert contact is not None
            customer = self.txn.get_customer(contact.customer_pid) if contact.customer_pid else None
            if customer is None:
                graph.add_node(self.node(pid))
            else:
                graph.add_customer(
                    [self.node(m) for m in customer.contact_pids], customer.watermark
                )
        return graph

    def flush(self) -> None:
        """Write back everything the loaded graph changed."""
        graph = self.flush_evidence()
        if graph is not None:
            self.write_components(graph.components(), graph.nodes)

    def flush_evidence(self) -> LinkGraph | None:
        """Write the loaded graph's connections and records; return it for its customers."""
        graph = self.graph
        if graph is None:
            return None
        self.graph = None
        self.edgeless = set()
        for a, b in graph.new_pairs:
            self.txn.put_edge(graph.nodes[a].pid, graph.nodes[b].pid)
        for key, (record, result) in self.pending.items():
            self.store_record(key, record, result)
        self.pending = {}
        return graph

    def store_record(self, key: bytes, record: RecordState, result: StepResult | None) -> None:
        if result is not None:
            set_result(record, result)
        self.txn.put_record(record)
        self.txn.index_records(list(record.contact_pids), key)

    def note_change(self, key: bytes, pids: Iterable[bytes] = ()) -> None:
        """Note a record this operation stores at ``key`` (fast path or replay)."""
        if self.changed_from is None or key < self.changed_from:
            self.changed_from = key
        for pid in pids:
            if key > self.stored_newest.get(pid, b""):
                self.stored_newest[pid] = key

    def defer_record(self, key: bytes, record: RecordState) -> None:
        """Store a record that is not the newest evidence of its contacts: the replay applies it."""
        self.store_record(key, record, None)
        self.note_change(key, record.contact_pids)
        self.deferred_keys.add(key)
        self.deferred.update(record.contact_pids)

    def remove_record(self, stored: RecordState) -> None:
        """Take a stored record's evidence out; its contacts join the batch's replay."""
        old_key = codec.canonical_key(stored.observed_at_us, stored.source, stored.record_id)
        for pid in stored.contact_pids:
            self.txn.unindex_record(pid, old_key)
        self.txn.delete_record(stored.source, stored.record_id)
        self.deferred_keys.discard(old_key)
        self.note_change(old_key)
        self.removed_contacts.append(list(stored.contact_pids))
        self.deferred.update(stored.contact_pids)

    # -- the replay path -------------------------------------------------------------------

    def replay_region(
        self, seeds: set[bytes], since: bytes | None = None
    ) -> dict[bytes, StepResult]:
        """Work out again, from their records, the customers around ``seeds``.

        ``since``: see :meth:`region` (only for operations that change records).
        """
        self.flush()
        return self.replay(self.region(seeds, since))

    def region(self, seeds: set[bytes], since: bytes | None = None) -> Region:
        """The closed region around ``seeds``, as stored.

        The region is closed: every record of a usable contact in it, every
        contact of those records, and every contact of their customers. Nothing
        outside it can change, so the rest of the store is not read.

        ``since`` is the earliest canonical key of a record the operation
        stored, replaced or removed, for operations that change nothing else
        (not a policy, not a key type). Then the region is *cut* at contacts
        isolated before ``since``: of such a contact only the records up to
        its isolation are followed. Everything before ``since`` is the same
        in the new history, so it is isolated there at the same record, and
        an isolated contact never joins a customer again: its later records
        link their other contacts without it, and it only counts their
        connections. The replay takes its connections from the stored edges
        and its watermark from its newest record (see :meth:`replay`).
        """
        region = Region(seeds=set(seeds), since=since)
        queue = list(seeds)
        # The records stored for the replay are in it whatever their contacts are.
        for key in self.deferred_keys:
            record = self.txn.get_record_by_canonical(key)
            if record is not None:
                region.records[key] = record
                queue.extend(record.contact_pids)
        expanded: set[bytes] = set()  # customers whose members are queued already
        while queue:
            pid = queue.pop()
            if pid in region.seen:
                continue
            contact = self.contact(pid)
            if contact is None:
                continue
            region.seen.add(pid)
            region.contacts.append(pid)
            if contact.customer_pid and contact.customer_pid not in expanded:
                expanded.add(contact.customer_pid)
                customer = self.txn.get_customer(contact.customer_pid)
                if customer is not None:
                    queue.extend(customer.contact_pids)
            usable = self.node(pid).usable
            if pid not in seeds and not usable:
                region.partial.add(pid)
                continue
            until = None
            if since is not None and usable and contact.isolated and contact.isolated_at < since:
                region.cut[pid] = until = contact.isolated_at
            for key, record in self.txn.keyed_records_of(pid, until):
                if record is not None and key not in region.records:
                    region.records[key] = record
                    queue.extend(record.contact_pids)
        return region

    def replay(self, region: Region) -> dict[bytes, StepResult]:
        """Replay a region's records from nothing and write back what changed."""
        graph = LinkGraph(
            self.config.policy.max_contacts, self.config.policy.isolate_min_connections
        )
        for pid in sorted(region.contacts, key=lambda p: self.contacts[p].first_seen):
            node = self.node(pid, fresh=True)
            if pid in region.partial:
                # No record of it was removed or replayed (those contacts are
                # seeds), so where it was first seen is as stored, or as the
                # batch's fast path left it.
                node.first_key, node.position = region.first_seen.get(pid) or self.first_seen_at(
                    pid, self.contacts[pid]
                )
            graph.add_node(node)
        records = region.records
        results = graph.replay((key, list(r.contact_pids)) for key, r in records.items())
        for pid, at in region.cut.items():
            if graph.nodes[graph.index[pid]].isolated_at != at:
                # The region rule says this cannot happen; the write is rolled back.
                raise RuntimeError("replay of a cut region did not isolate a cut contact again")
        self.edgeless = set()
        self._rewrite_edges(region, graph)
        if region.cut:
            self._settle_cut(region, graph)
        for key, record in records.items():
            before = record.SerializeToString()
            set_result(record, results[key])
            if record.SerializeToString() != before:
                self.txn.put_record(record)
        self.write_components(graph.components(), graph.nodes)
        self.deferred_keys = set()
        self.stored_newest = {}
        self.removed_contacts = []
        self.changed_from = None
        return results

    def _rewrite_edges(self, region: Region, graph: LinkGraph) -> None:
        """Leave the edges of the region's uncut contacts as the replay found them.

        The same as deleting every edge of those contacts and storing the
        replay's pairs, but an edge that is both stored and found again (most
        of them) is neither deleted nor written.
        """
        nodes = graph.nodes
        pairs = [(nodes[a].pid, nodes[b].pid) for a, b in graph.new_pairs]
        found = set(pairs) | {(b, a) for a, b in pairs}
        stored: set[tuple[bytes, bytes]] = set()  # both directions, as edges are kept
        for pid in region.contacts:
            if pid not in region.cut:
                for other in self.txn.neighbours_of(pid):
                    stored.add((pid, other))
                    stored.add((other, pid))
        for a, b in stored - found:
            self.txn.delete_edge(a, b)
        for a, b in pairs:
            if (a, b) not in stored:
                self.txn.put_edge(a, b)

    def _settle_cut(self, region: Region, graph: LinkGraph) -> None:
        """Connections and watermarks of the cut contacts, over all their records.

        A cut contact's edges to contacts outside the region are as stored (no
        record naming both changed); its edges to uncut contacts of the region
        were written from the replay. An edge between two cut contacts goes
        only when a removed record named both and no record still does.
        """
        removed_from: set[bytes] = set()
        for named in self.removed_contacts:
            cut = [p for p in dict.fromkeys(named) if p in region.cut]
            removed_from.update(cut)
            for a, b in combinations(cut, 2):
                if set(self.txn.record_keys_of(a)) & set(self.txn.record_keys_of(b)):
                    continue
                others = [o for o in self.txn.neighbours_of(a) if o != b]
                self.txn.delete_edges_of(a)
                for other in others:
                    self.txn.put_edge(a, other)
        for pid, isolated_at in region.cut.items():
            node = graph.nodes[graph.index[pid]]
            node.connections = len(self.txn.neighbours_of(pid))
            # An isolated contact is a customer of its own, as new as its newest record.
            if pid in removed_from:
                keys = self.txn.record_keys_of(pid)
                newest = max(isolated_at, keys[-1]) if keys else isolated_at
            else:
                contact = self.contacts[pid]
                customer = self.txn.get_customer(contact.customer_pid)
                stored = customer.watermark if customer is not None else b""
                newest = max(isolated_at, stored, self.stored_newest.get(pid, b""))
            graph.raise_watermark(pid, newest)

    def replayed_account_graph(self) -> tuple[LinkGraph, dict[bytes, StepResult]]:
        """Replay every record of the account on an empty graph (nothing is written)."""
        graph = LinkGraph(
            self.config.policy.max_contacts, self.config.policy.isolate_min_connections
        )
        contacts = sorted(self.txn.iter_contacts(), key=lambda item: item[1].first_seen)
        for pid, contact in contacts:
            self.contacts.setdefault(pid, contact)
            graph.add_node(self.node(pid, fresh=True))
        results = graph.replay(
            (codec.canonical_key(r.observed_at_us, r.source, r.record_id), list(r.contact_pids))
            for r in self.txn.iter_records()
        )
        return graph, results

    def rebuild_account(self) -> None:
        """Replay the whole account: after a change of key types or policy."""
        seeds = {pid for pid, _ in self.txn.iter_contacts()}
        if seeds:
            self.replay_region(seeds)

    # -- writing customers back ----------------------------------------------------------------

    def write_components(
        self, components: list[tuple[list[Node], bytes]], nodes: Iterable[Node]
    ) -> None:
        customer_of = pids.reconcile(self.txn, components, self.now, self.emit).customer_of
        contacts = self.contacts
        for node in nodes:
            contact = contacts[node.pid]
            customer = customer_of[node.pid]
            if (
                contact.customer_pid == customer
                and contact.connections == node.connections
                and contact.isolated == node.isolated
                and contact.isolated_at == node.isolated_at
                and contact.isolated_connections == node.isolated_connections
                and contact.moved_at == node.moved_at
                and contact.first_key == node.first_key
                and contact.first_position == node.position
                and contact.refused == node.refused
            ):
                continue
            if contact.isolated != node.isolated:
                self.txn.set_isolated(node.pid, node.isolated)
            contact.customer_pid = customer
            contact.connections = node.connections
            contact.isolated = node.isolated
            contact.isolated_at = node.isolated_at
            contact.isolated_connections = node.isolated_connections
            contact.moved_at = node.moved_at
            contact.first_key = node.first_key
            contact.first_position = node.position
            contact.refused = node.refused
            self.txn.put_contact(node.pid, contact)

    def emit(
        self,
        kind: str,
        customer_pid: bytes,
        *,
        others: Iterable[bytes] = (),
        added: Iterable[bytes] = (),
        removed: Iterable[bytes] = (),
        detail: str = "",
    ) -> None:
        """Append one event to the change feed and the customer's history (SPEC 3.7, 7)."""
        event = ChangeEvent(
            seq=self.txn.next_change_seq(),
            kind=kind,
            customer_pid=customer_pid,
            other_customer_pids=list(others),
            contacts_added=list(added),
            contacts_removed=list(removed),
            actor=self.actor,
            at_us=self.now,
            detail=detail,
        )
        self.txn.append_event(event)


@dataclass(slots=True)
class Region:
    """A closed region of contacts and the records that decide their customers."""

    seeds: set[bytes] = field(default_factory=set)
    # The earliest key the operation changed, when the region is cut (see AccountUnit.region).
    since: bytes | None = None
    contacts: list[bytes] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    # Contacts whose records are not all in the region: their first-seen key stands.
    partial: set[bytes] = field(default_factory=set)
    # First-seen keys of partial contacts not yet written (pending in a batch).
    first_seen: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    records: dict[bytes, RecordState] = field(default_factory=dict)
    # Contacts isolated before ``since``, with the key of their isolation: the region
    # follows only their records up to it.
    cut: dict[bytes, bytes] = field(default_factory=dict)


def set_result(record: RecordState, result: StepResult) -> None:
    record.outcome = result.outcome
    if record.group_pids:
        del record.group_pids[:]
    record.group_pids.extend(result.group)
    if record.conflict_contact_pids:
        del record.conflict_contact_pids[:]
    for a, b in result.refused:
        record.conflict_contact_pids.extend((a, b))
