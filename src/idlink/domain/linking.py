"""The linking rules of SPEC 3, applied one record at a time in canonical order.

A :class:`LinkGraph` holds the part of an account's contact graph that one
operation touches: whole customers (components) of contacts, their connection
counts, isolation and device-move state. :meth:`LinkGraph.apply` is the single
step of the canonical algorithm; a rebuild is the same step applied to every
record in canonical order on an empty graph, and an incremental update is the
same step applied to a graph loaded from the store. Because both run this one
function, incremental updates and rebuilds give the same partition whenever the
incremental record comes after every record its customers have seen (the
watermark rule, see :meth:`LinkGraph.is_newest`); anything else is replayed.

Every ranking of contacts uses the *contact order* (SPEC 3.8), never a
contact PID (PIDs depend on the account secret)::

    rank(c) = (priority of c's key type, first_key(c), position(c))

where ``first_key`` is the canonical key of the first record, in canonical
order, that names ``c`` and ``position`` is ``c``'s index in that record's
contact list (repeats removed). ``(first_key, position)`` is unique among
contacts that have records, so the order is total over every contact a step
compares.

The rules of one step (SPEC 3.1, 3.3, 3.4):

1. The record's *usable* contacts are the valid ones that are not
   do-not-link. Every two of them become connected (connection counts include
   this record).
2. Its *linkable* contacts (usable, not isolated) are joined one by one,
   non-reassignable ones first, then in contact order. The first is the
   anchor; each next one's customer is merged into the customer of the
   record's group, unless:
   - a key type would exceed ``max_per_customer``: if the contact is
     reassignable and its customer holds others, it moves to the group's
     side (older records stop counting for it); otherwise that link is
     refused (CONFLICT), the contact is left out and the others still join;
   - the merged customer would exceed ``max_contacts``: the contact with the
     most connections in it (ties: the one that comes last in the contact
     order, the newest and least trusted) is isolated if it has at least
     ``isolate_min_connections`` and is not marked never-isolate, its
     customer is computed again without it, and the check repeats; if it
     does not qualify the link is refused (CAPPED) and that contact is left out.
3. The contacts joined form the record's *group*: its applied evidence. A
   customer computed again (after an isolation or a move) is the union of the
   groups of its members' records, without isolated contacts and without a
   moved device in records older than its move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import combinations

from idlink._native._degree import ConnectionCounter
from idlink._native._unionfind import UnionFind


class RecordOutcome(IntEnum):
    """What a record's step did (the numbers of ``idlink.v1.RecordOutcome``, checked by a test)."""

    APPLIED = 1
    CAPPED = 2
    CONFLICT = 3


APPLIED = RecordOutcome.APPLIED
CAPPED = RecordOutcome.CAPPED
CONFLICT = RecordOutcome.CONFLICT


@dataclass(slots=True)
class Node:
    """One contact as linking sees it."""

    pid: bytes
    type_name: str
    usable: bool  # valid, not blocked, not do-not-link
    reassignable: bool
    type_limit: int
    # A per-account arrival counter: orders only contacts that no record names.
    first_seen: int
    priority: int = 0  # the key type's rank (SPEC 3.8)
    # Where the contact was first seen: canonical key of the first record naming
    # it (b"" while none does) and its position there. Derived from the records.
    first_key: bytes = b""
    position: int = 0
    never_isolate: bool = False
    connections: int = 0
    isolated: bool = False
    isolated_at: bytes = b""
    isolated_connections: int = 0
    moved_at: bytes = b""
    # The customer the contact belonged to before this operation (b"" if new).
    customer_pid: bytes = b""
    # A usable contact named by a record whose link was refused (ContactState.refused):
    # set by ``apply``, never cleared by it. A replay that does not read every record
    # of a contact reads it as unusable or isolated, whose resolve reads its records
    # whatever the mark; it becomes linkable again only in a replay that reads them all.
    refused: bool = False

    def counts_in(self, record_key: bytes) -> bool:
        """Whether this contact takes part in the group of a record (SPEC 3.3, 3.4)."""
        if self.isolated:
            return False
        return not self.moved_at or record_key >= self.moved_at

    @property
    def earliest_seen(self) -> SeenKey:
        """Sort key of "earliest-seen" (SPEC 3.5, 3.8)."""
        return seen_key(self.first_key, self.position, self.first_seen)

    @property
    def rank(self) -> tuple[int, SeenKey]:
        """The contact order of SPEC 3.8: key-type priority, then where it was first seen."""
        return (self.priority, self.earliest_seen)


SeenKey = tuple[bool, bytes, int, int]


def seen_key(first_key: bytes, position: int, first_seen: int) -> SeenKey:
    """Where a contact was first seen, smallest first; contacts no record names come last.

    ``(first_key, position)`` is unique among contacts that have records; the
    arrival counter ``first_seen`` orders only those that have none (a
    contact created by a resolve, or whose records were all deleted).
    """
    return (not first_key, first_key, position, first_seen)


@dataclass(slots=True)
class StepResult:
    outcome: int
    group: list[bytes]
    # One contact on each side of each refused link.
    refused: list[tuple[bytes, bytes]] = field(default_factory=list)


GroupSource = Callable[[Sequence[bytes]], Iterable[tuple[bytes, Sequence[bytes]]]]
EdgeSource = Callable[[bytes, bytes], bool]


class LinkGraph:
    """Customers of a set of contacts, and the step that applies one record."""

    def __init__(
        self,
        max_contacts: int,
        isolate_min_connections: int,
        *,
        stored_groups: GroupSource | None = None,
        stored_edge: EdgeSource | None = None,
    ) -> None:
        self.max_contacts = max_contacts
        self.isolate_min_connections = isolate_min_connections
        self.nodes: list[Node] = []
        self.index: dict[bytes, int] = {}
        self._uf = UnionFind()
        self._handle: list[int] = []  # node -> union-find element
        self._members: dict[int, list[int]] = {}  # root element -> nodes
        self._watermark: dict[int, bytes] = {}  # root element -> newest record key seen
        self._conn = ConnectionCounter()
        # Whether any contact's type has a limit per customer (else no join can break one).
        self._limited = False
        self.new_pairs: list[tuple[int, int]] = []
        # Groups of records applied while this graph lived, per node.
        self._groups: dict[bytes, list[int]] = {}
        self._node_records: dict[int, list[bytes]] = {}
        # The store's view of what came before, for graphs loaded from it.
        self._stored_groups = stored_groups
        self._stored_edge = stored_edge

    # -- building ------------------------------------------------------------

    def add_customer(self, nodes: Sequence[Node], watermark: bytes) -> None:
        """Add the contacts of one existing customer (they form one component)."""
        ids = [self._add_node(node) for node in nodes]
        for other in ids[1:]:
            self._union_nodes(ids[0], other)
        self._watermark[self._root(ids[0])] = watermark

    def add_node(self, node: Node) -> int:
        """Add one contact as a customer of its own."""
        return self._add_node(node)

    def _add_node(self, node: Node) -> int:
        if node.pid in self.index:
            raise ValueError("contact added twice")
        node_id = len(self.nodes)
        if node.type_limit:
            self._limited = True
        self.nodes.append(node)
        self.index[node.pid] = node_id
        element = self._uf.add()
        self._handle.append(element)
        self._members[element] = [node_id]
        self._watermark[element] = b""
        return node_id

    # -- queries ----------------------------------------------------------------

    def _root(self, node_id: int) -> int:
        return int(self._uf.find(self._handle[node_id]))

    def root_of(self, pid: bytes) -> int:
        return self._root(self.index[pid])

    def components(self) -> list[tuple[list[Node], bytes]]:
        """Every component of the graph: its nodes and its watermark."""
        return [
            ([self.nodes[n] for n in members], self._watermark[root])
            for root, members in self._members.items()
        ]

    def raise_watermark(self, pid: bytes, record_key: bytes) -> None:
        """Note that a record at ``record_key`` touched the customer of ``pid``."""
        root = self.root_of(pid)
        if record_key > self._watermark[root]:
            self._watermark[root] = record_key

    def is_newest(self, record_key: bytes, pids: Iterable[bytes]) -> bool:
        """Whether applying the record now is what a rebuild would do at its place.

        True when the record comes after every record the customers of
        ``pids`` have seen. A contact isolated before the record does not
        count: it is a customer of its own for good, so the record can only
        add to its connections, which no later step reads (an isolated contact
        is never a candidate again), and to its watermark, which only grows.
        """
        for pid in pids:
            node_id = self.index[pid]
            node = self.nodes[node_id]
            if node.isolated and node.usable and node.isolated_at < record_key:
                continue
            if record_key <= self._watermark[self._root(node_id)]:
                return False
        return True

    # -- the step -------------------------------------------------------------------

    def apply(self, record_key: bytes, pids: Sequence[bytes]) -> StepResult:
        """Apply one record (its contacts must all be in the graph)."""
        nodes, index, watermark = self.nodes, self.index, self._watermark
        ids = list(dict.fromkeys([index[pid] for pid in pids]))
        for position, n in enumerate(ids):
            node = nodes[n]
            # Where the contact was first seen: the earliest record naming it, and its place there.
            if not node.first_key or record_key < node.first_key:
                node.first_key = record_key
                node.position = position
        usable = [n for n in ids if nodes[n].usable]
        if len(usable) > 1:
            self._connect_all(usable)
        find, handle = self._uf.find, self._handle
        for n in usable:
            root = find(handle[n])
            # In canonical order the key only grows; an isolated contact can
            # see a record older than its newest one on the fast path.
            if record_key > watermark[root]:
                watermark[root] = record_key

        # SPEC 3.4, 3.8: non-reassignable contacts first, then the contact order.
        linkable = [n for n in usable if not nodes[n].isolated]
        if len(linkable) > 1:
            linkable.sort(key=lambda n: (nodes[n].reassignable, nodes[n].rank))
        # The group is registered before linking starts, so that a customer
        # computed again in the middle of this record keeps what it joined so far.
        group: list[int] = []
        self._groups[record_key] = group
        node_records = self._node_records
        for n in ids:
            found = node_records.get(n)
            if found is None:
                node_records[n] = [record_key]
            else:
                found.append(record_key)
        outcome = APPLIED
        refused: list[tuple[bytes, bytes]] = []
        members = self._members
        for n in linkable:
            if nodes[n].isolated:  # isolated by this very record
                continue
            moved = False
            while True:
                live = [m for m in group if not nodes[m].isolated]
                if not live:
                    group.clear()
                    group.append(n)
                    break
                a, b = find(handle[live[0]]), find(handle[n])
                if a == b:
                    group.append(n)
                    break
                size = len(members[a]) + len(members[b])
                if self._limited and self._exceeds_key_limit(members[a] + members[b]):
                    # SPEC 3.4: a shared device moves to the record's side.
                    if nodes[n].reassignable and not moved and len(members[b]) > 1:
                        self._move(n, record_key)
                        moved = True
                        continue
                    outcome = CONFLICT
                    refused.append((nodes[live[0]].pid, nodes[n].pid))
                    break
                if size > self.max_contacts:
                    victim = self._isolation_candidate(members[a] + members[b])
                    if victim is not None:
                        self._isolate(victim, record_key)
                        if victim == n:
                            break
                        continue
                    if outcome == APPLIED:
                        outcome = CAPPED
                    refused.append((nodes[live[0]].pid, nodes[n].pid))
                    break
                self._union_roots(a, b)
                watermark[find(handle[n])] = record_key
                group.append(n)
                break

        group[:] = [m for m in group if not nodes[m].isolated]
        if refused:
            for n in usable:  # an unusable contact's resolve reads its records anyway
                nodes[n].refused = True
        return StepResult(outcome, [nodes[m].pid for m in group], refused)

    def replay(self, records: Iterable[tuple[bytes, Sequence[bytes]]]) -> dict[bytes, StepResult]:
        """Apply records in canonical order; return each one's result by key."""
        return {key: self.apply(key, pids) for key, pids in sorted(records)}

    # -- connections ---------------------------------------------------------------

    def _connect_all(self, ids: list[int]) -> None:
        connect, stored_edge, nodes = self._conn.connect, self._stored_edge, self.nodes
        for a, b in combinations(ids, 2):
            if not connect(a, b):
                continue
            node_a, node_b = nodes[a], nodes[b]
            if stored_edge is not None and stored_edge(node_a.pid, node_b.pid):
                continue
            node_a.connections += 1
            node_b.connections += 1
            self.new_pairs.append((a, b))

    # -- limits, isolation, moves -------------------------------------------------------

    def _exceeds_key_limit(self, members: list[int]) -> bool:
        counts: dict[str, int] = {}
        for m in members:
            node = self.nodes[m]
            if node.type_limit:
                count = counts.get(node.type_name, 0) + 1
                if count > node.type_limit:
                    return True
                counts[node.type_name] = count
        return False

    def _isolation_candidate(self, members: list[int]) -> int | None:
        """The most-connected contact, if it may be isolated (SPEC 3.3, 3.8).

        Ties go to the contact that comes last in the contact order: the
        newest, least trusted one, so a long-standing contact is not cut off
        because a placeholder caught up with it.
        """
        best = max(members, key=lambda m: (self.nodes[m].connections, self.nodes[m].rank))
        node = self.nodes[best]
        if node.never_isolate or node.connections < self.isolate_min_connections:
            return None
        return best

    def _isolate(self, node_id: int, record_key: bytes) -> None:
        node = self.nodes[node_id]
        node.isolated = True
        node.isolated_at = record_key
        node.isolated_connections = node.connections
        self._recompute(self._root(node_id), record_key)

    def _move(self, node_id: int, record_key: bytes) -> None:
        self.nodes[node_id].moved_at = record_key
        self._recompute(self._root(node_id), record_key)

    def _recompute(self, root: int, record_key: bytes) -> None:
        """Compute a component again from its members' record groups."""
        members = self._members.pop(root)
        del self._watermark[root]
        for m in members:
            element = self._uf.add()
            self._handle[m] = element
            self._members[element] = [m]
            self._watermark[element] = record_key
        keep = {self.nodes[m].pid: m for m in members if not self.nodes[m].isolated}
        for key, group_pids in self._groups_touching(list(keep)):
            group = [
                keep[p] for p in group_pids if p in keep and self.nodes[keep[p]].counts_in(key)
            ]
            for other in group[1:]:
                self._union_nodes(group[0], other)

    def _groups_touching(self, pids: list[bytes]) -> list[tuple[bytes, Sequence[bytes]]]:
        found: dict[bytes, Sequence[bytes]] = {}
        if self._stored_groups is not None:
            for key, group in self._stored_groups(pids):
                found[key] = group
        for pid in pids:
            for key in self._node_records.get(self.index[pid], ()):
                found[key] = [self.nodes[n].pid for n in self._groups[key]]
        return sorted(found.items())

    def _union_nodes(self, a: int, b: int) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            self._union_roots(ra, rb)

    def _union_roots(self, ra: int, rb: int) -> None:
        root = int(self._uf.union(ra, rb))
        other = rb if root == ra else ra
        self._members[root].extend(self._members.pop(other))
        self._watermark[root] = max(self._watermark[root], self._watermark.pop(other))
