"""The identity engine: records in, customers out, over the store.

Every operation runs in one write transaction on the store's writer thread, so
it commits whole or not at all. Linking rules live in :mod:`linking`; this
module loads the part of the graph an operation touches, runs the rules, and
writes back the contacts, records, connections and customers that changed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from idlink.domain import customers as customer_rules
from idlink.domain.contacts import (
    MAX_RECORD_ID_BYTES,
    MAX_SOURCE_BYTES,
    ContactKey,
    PreparedContact,
    account_secret,
    check_text,
    national_number,
    prepare_contact,
    unusable_reason,
)
from idlink.domain.journey import journey_page
from idlink.domain.keytypes import AccountConfig, AccountPolicy, KeyType
from idlink.domain.linking import APPLIED, LinkGraph, Node, StepResult
from idlink.domain.views import (
    CREATED,
    FOUND,
    INVALID,
    NOT_FOUND,
    ContactView,
    CustomerView,
    Explanation,
    Resolution,
    View,
    has_policies,
    policy_count_key,
)
from idlink.errors import InvalidArgument, NotFound
from idlink.store import codec
from idlink.store.env import Store
from idlink.store.txn import (
    AccountState,
    ChangeEvent,
    ContactPolicyState,
    ContactState,
    EngagementState,
    KeyTypeState,
    RecordState,
    Txn,
)

MAX_CONTACTS_PER_RECORD = 64
MAX_ACCOUNT_BYTES = 128
MANUAL_SOURCE = "manual"
MAX_SUMMARY_CHARS = 16384
MAX_SEQ = (1 << 64) - 1


def now_us() -> int:
    return time.time_ns() // 1000


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


class IdentityEngine:
    """Accounts, contacts, records and customers over one store."""

    def __init__(
        self,
        store: Store,
        master_secret: bytes,
        *,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self.store = store
        self._master = master_secret
        self._clock = clock
        self._secrets: dict[str, bytes] = {}
        self._configs: dict[str, tuple[int, AccountConfig]] = {}
        self._changed = threading.Condition()

    # -- accounts and configuration ------------------------------------------------

    def secret(self, account: str) -> bytes:
        found = self._secrets.get(account)
        if found is None:
            found = self._secrets[account] = account_secret(self._master, account)
        return found

    def _config(self, txn: Txn, account: str, *, create: bool) -> AccountConfig | None:
        check_text(account, "account", MAX_ACCOUNT_BYTES)
        account_id = txn.account_id(account)
        if account_id is None:
            if not create:
                return None
            account_id = txn.create_account_id(account)
            config = AccountConfig(account, account_id)
            _put_account(txn, config, self._clock())
            return config
        version = txn.counter(_config_version_key(account_id))
        cached = self._configs.get(account)
        if cached is not None and cached[0] == version:
            return cached[1]
        state = txn.get_account(account_id)
        assert state is not None, "an account id without its configuration"
        config = _account_config(state)
        self._configs[account] = (version, config)
        return config

    def account_config(self, account: str) -> AccountConfig:
        """The account's key types and policy (the defaults for a new account)."""
        with self.store.read() as txn:
            config = self._config(txn, account, create=False)
        return config if config is not None else AccountConfig(account, 0)

    def put_key_type(self, account: str, key_type: KeyType, actor: str = "") -> KeyType:
        """Add or change a key type; links are worked out again when linking rules change."""

        def run(txn: Txn) -> KeyType:
            config = self._config(txn, account, create=True)
            assert config is not None
            existing = config.key_types.get(key_type.name)
            _refuse_identity_change(txn, config, key_type)
            updated = config.with_key_type(key_type)
            _put_account(txn, updated, self._clock())
            if existing is not None and existing != key_type:
                _Session(self, txn, updated, actor).rebuild_account()
            return key_type

        result = self.store.write(run)
        self._notify()
        return result

    def set_account_policy(
        self, account: str, policy: AccountPolicy, actor: str = ""
    ) -> AccountPolicy:
        def run(txn: Txn) -> AccountPolicy:
            config = self._config(txn, account, create=True)
            assert config is not None
            updated = config.with_policy(policy)
            _put_account(txn, updated, self._clock())
            if updated.policy != config.policy:
                _Session(self, txn, updated, actor).rebuild_account()
            return policy

        result = self.store.write(run)
        self._notify()
        return result

    # -- records ---------------------------------------------------------------------

    def link(self, account: str, record: RecordInput, actor: str = "") -> LinkResult:
        """Upsert (or delete) one record and return its outcome."""
        return self.ingest(account, [record], actor)[0]

    def ingest(
        self, account: str, records: Sequence[RecordInput], actor: str = ""
    ) -> list[LinkResult]:
        """Apply a batch of records in one write transaction; results in input order.

        A record named twice in one batch counts once, as its last version.
        """
        for i, record in enumerate(records):
            _check_record(record, f"records[{i}]")
        secret = self.secret(account)

        def run(txn: Txn) -> list[LinkResult]:
            config = self._config(txn, account, create=True)
            assert config is not None
            prepared = [
                [
                    prepare_contact(secret, config, key, f"records[{i}].contacts[{j}]")
                    for j, key in enumerate(record.contacts)
                ]
                for i, record in enumerate(records)
            ]
            session = _Session(self, txn, config, actor)
            return session.apply_batch(records, prepared)

        results = self.store.write(run)
        self._notify()
        return results

    def merge_keys(self, account: str, keys: Sequence[ContactKey], actor: str = "") -> LinkResult:
        """Say these contacts are one person: a manual record (SPEC 3.6)."""
        return self.link(account, manual_record(keys, self._clock()), actor or MANUAL_SOURCE)

    def delete_record(self, account: str, source: str, record_id: str, actor: str = "") -> None:
        """Remove a record's evidence; customers it held together split (SPEC 3.6)."""
        check_text(source, "source", MAX_SOURCE_BYTES)
        check_text(record_id, "record_id", MAX_RECORD_ID_BYTES)

        def run(txn: Txn) -> None:
            config = self._config(txn, account, create=False)
            if config is None or txn.get_record(_prefix(config), source, record_id) is None:
                raise NotFound(f"record {source}/{record_id} not found")
            _Session(self, txn, config, actor).delete_record(source, record_id)

        self.store.write(run)
        self._notify()

    def set_contact_policy(
        self,
        account: str,
        key: ContactKey,
        *,
        do_not_link: bool | None = None,
        never_isolate: bool | None = None,
        actor: str = "",
    ) -> bytes:
        """Set or clear do-not-link / never-isolate on a contact, seen or not (SPEC 2.5)."""
        secret = self.secret(account)

        def run(txn: Txn) -> bytes:
            config = self._config(txn, account, create=True)
            assert config is not None
            prepared = prepare_contact(secret, config, key)
            prefix = _prefix(config)
            policy = txn.get_policy(prefix, prepared.pid) or ContactPolicyState()
            before = (policy.do_not_link, policy.never_isolate)
            if do_not_link is not None:
                policy.do_not_link = do_not_link
            if never_isolate is not None:
                policy.never_isolate = never_isolate
            if (policy.do_not_link, policy.never_isolate) == before:
                return prepared.pid
            policy.set_by = actor
            policy.set_at_us = self._clock()
            existed = txn.get_policy(prefix, prepared.pid) is not None
            if policy.do_not_link or policy.never_isolate:
                txn.put_policy(prefix, prepared.pid, policy)
                if not existed:
                    txn.next_counter(policy_count_key(prefix))
            else:
                txn.delete_policy(prefix, prepared.pid)
                if existed:
                    remaining = txn.counter(policy_count_key(prefix)) - 1
                    txn.put_meta(b"counter:" + policy_count_key(prefix), codec.u64(remaining))
            session = _Session(self, txn, config, actor)
            contact = txn.get_contact(prefix, prepared.pid)
            if contact is not None:
                session.replay_region({prepared.pid})
                replayed = txn.get_contact(prefix, prepared.pid)
                assert replayed is not None
                session.emit(
                    "policy_changed",
                    replayed.customer_pid,
                    detail=f"do_not_link={policy.do_not_link} never_isolate={policy.never_isolate}",
                )
            return prepared.pid

        pid = self.store.write(run)
        self._notify()
        return pid

    # -- reads -------------------------------------------------------------------------

    def read(self) -> _Reader:
        """A consistent read view (use as a context manager)."""
        return _Reader(self)

    def partition(self, account: str) -> list[frozenset[bytes]]:
        """The stored customers of an account, as sets of contact PIDs."""
        with self.store.read() as txn:
            config = self._config(txn, account, create=False)
            if config is None:
                return []
            return [frozenset(c.contact_pids) for _, c in txn.iter_customers(_prefix(config))]

    def rebuild_partition(self, account: str) -> list[frozenset[bytes]]:
        """The customers a rebuild from every record would give (SPEC 3.2), computed in memory."""
        return self.rebuild(account).partition

    def rebuild(self, account: str) -> Rebuilt:
        """Everything a rebuild from every record would give (SPEC 3.2), computed in memory."""
        with self.store.read() as txn:
            config = self._config(txn, account, create=False)
            if config is None:
                return Rebuilt()
            graph, results = _Session(self, txn, config, "").replayed_account_graph()
            return Rebuilt(
                [frozenset(n.pid for n in nodes) for nodes, _ in graph.components()],
                {n.pid: n for n in graph.nodes},
                results,
            )

    # -- resolve and customers ------------------------------------------------------------

    def resolve(
        self, account: str, key: ContactKey, *, create_if_missing: bool = False, actor: str = ""
    ) -> Resolution:
        """Who is this contact? (SPEC 5.1)"""
        secret = self.secret(account)
        with self.store.read() as txn:
            config = self._config(txn, account, create=False) or AccountConfig(account, 0)
            prepared = prepare_contact(secret, config, key)
            answer = View(txn, config).resolve(prepared)
        if answer.status not in (NOT_FOUND, INVALID) or not create_if_missing or answer.customer:
            return answer

        def run(txn: Txn) -> Resolution:
            config = self._config(txn, account, create=True)
            assert config is not None
            prepared = prepare_contact(secret, config, key)
            session = _Session(self, txn, config, actor)
            created = session.contact(prepared.pid) is None
            if created:
                session.ensure_contact(prepared)
                session._load([prepared.pid])
                session.flush()
            answer = View(txn, config).resolve(prepared)
            if created and answer.status == FOUND:
                answer.status = CREATED
            return answer

        answer = self.store.write(run)
        self._notify()
        return answer

    def get_customer(self, account: str, customer_pid: bytes) -> CustomerView:
        """A customer by PID; an old PID of a merged customer finds the survivor."""
        with self.read() as reader:
            return reader.view(account).customer(customer_pid)

    def explain(self, account: str, a: ContactKey, b: ContactKey | None = None) -> Explanation:
        """The chain of records that links two contacts, or why a contact stands alone."""
        secret = self.secret(account)
        with self.read() as reader:
            view = reader.view(account)
            first = prepare_contact(secret, view.config, a)
            second = prepare_contact(secret, view.config, b, "other") if b is not None else None
            return view.explain(first, second)

    def history(self, account: str, customer_pid: bytes) -> list[ChangeEvent]:
        with self.read() as reader:
            return reader.view(account).history(customer_pid)

    def list_isolated(
        self, account: str, after: bytes = b"", limit: int = 100
    ) -> list[ContactView]:
        with self.read() as reader:
            return reader.view(account).isolated(after, limit)

    def changes_after(self, account: str, seq: int, limit: int = 500) -> list[ChangeEvent]:
        """Change-feed events with a sequence number above ``seq`` (SPEC 7)."""
        with self.read() as reader:
            config = reader.config(account)
            if config is None or seq >= MAX_SEQ:
                return []
            return reader.txn.changes_after(_prefix(config), seq, limit)

    def preview(
        self,
        account: str,
        *,
        key_type: KeyType | None = None,
        policy: AccountPolicy | None = None,
        examples: int = 5,
    ) -> Preview:
        """What a change of key type or policy would do, computed from the records (SPEC 3.7)."""
        with self.read() as reader:
            config = reader.config(account)
            if config is None:
                return Preview()
            changed = config
            if key_type is not None:
                _refuse_identity_change(reader.txn, config, key_type)
                changed = changed.with_key_type(key_type)
            if policy is not None:
                changed = changed.with_policy(policy)
            graph, _ = _Session(self, reader.txn, changed, "").replayed_account_graph()
            return _compare(reader.txn, _prefix(config), graph, examples)

    # -- journey ---------------------------------------------------------------------------

    def record_engagement(
        self,
        account: str,
        key: ContactKey,
        *,
        occurred_at_us: int,
        channel: str,
        direction: str = "",
        summary: str = "",
        attributes: dict[str, str] | None = None,
        engagement_id: bytes = b"",
        actor: str = "",
    ) -> EngagementState:
        """Store one interaction on the contact it happened on (created if new)."""
        check_text(channel, "channel", 64)
        check_text(direction, "direction", 64, required=False)
        if len(summary) > MAX_SUMMARY_CHARS:
            raise InvalidArgument(
                f"summary is longer than {MAX_SUMMARY_CHARS} characters", field="summary"
            )
        if engagement_id and len(engagement_id) != 16:
            raise InvalidArgument("engagement_id must be a UUID", field="engagement_id")
        secret = self.secret(account)

        def run(txn: Txn) -> EngagementState:
            config = self._config(txn, account, create=True)
            assert config is not None
            prepared = prepare_contact(secret, config, key)
            session = _Session(self, txn, config, actor)
            if session.contact(prepared.pid) is None:
                session.ensure_contact(prepared)
                session._load([prepared.pid])
                session.flush()
            prefix = _prefix(config)
            if engagement_id:
                existing = txn.get_engagement(prefix, engagement_id)
                if existing is not None:
                    return existing  # an idempotent retry
            engagement = EngagementState(
                engagement_id=engagement_id or uuid.uuid4().bytes,
                contact_pid=prepared.pid,
                occurred_at_us=occurred_at_us,
                channel=channel,
                direction=direction,
                summary=summary,
                attributes=attributes or {},
                recorded_at_us=self._clock(),
            )
            txn.put_engagement(prefix, engagement)
            return engagement

        return self.store.write(run)

    def list_journey(
        self, account: str, customer_pid: bytes, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[CustomerView, list[EngagementState], str]:
        """One page of a customer's journey across all its contacts (SPEC 6)."""
        with self.read() as reader:
            view = reader.view(account)
            customer = view.customer(customer_pid)
            page, token = journey_page(
                reader.txn,
                view.prefix,
                customer.pid,
                [c.pid for c in customer.contacts],
                page_size,
                page_token,
            )
            return customer, page, token

    def relink_engagement(
        self, account: str, engagement_id: bytes, customer_pid: bytes, actor: str = ""
    ) -> EngagementState:
        """Pin one engagement to a customer; the pin survives later merges (SPEC 3.6)."""

        def run(txn: Txn) -> EngagementState:
            config = self._config(txn, account, create=False)
            if config is None:
                raise NotFound("engagement not found", field="engagement_id")
            prefix = _prefix(config)
            engagement = txn.get_engagement(prefix, engagement_id)
            if engagement is None:
                raise NotFound("engagement not found", field="engagement_id")
            target, _ = customer_rules.follow_redirects(txn, prefix, customer_pid)
            if txn.get_customer(prefix, target) is None:
                raise NotFound("customer not found", field="customer_pid")
            if engagement.pinned_customer_pid:
                txn.delete_pin(prefix, engagement.pinned_customer_pid, engagement_id)
            engagement.pinned_customer_pid = target
            txn.put_engagement(prefix, engagement)
            txn.put_pin(prefix, target, engagement_id)
            session = _Session(self, txn, config, actor)
            session.emit("updated", target, detail="engagement relinked")
            return engagement

        result = self.store.write(run)
        self._notify()
        return result

    # -- change notifications ---------------------------------------------------------------

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        """Block until some write commits or the timeout passes."""
        with self._changed:
            self._changed.wait(timeout)


class _Session:
    """The state of one write operation: a loaded graph and what it must write back."""

    def __init__(self, engine: IdentityEngine, txn: Txn, config: AccountConfig, actor: str) -> None:
        self.engine = engine
        self.txn = txn
        self.config = config
        self.prefix = _prefix(config)
        self.actor = actor
        self.now = engine._clock()
        self.graph: LinkGraph | None = None
        self.has_policies = has_policies(txn, self.prefix)
        self.contacts: dict[bytes, ContactState] = {}
        self.pending: dict[bytes, tuple[RecordState, StepResult]] = {}
        # Contacts around records stored but not yet applied: replayed together.
        self.deferred: set[bytes] = set()
        # Contacts created by this operation: no record named them before it.
        self.created: set[bytes] = set()

    # -- contacts ---------------------------------------------------------------------

    def contact(self, pid: bytes) -> ContactState | None:
        found = self.contacts.get(pid)
        if found is None:
            found = self.txn.get_contact(self.prefix, pid)
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
            first_seen=self.txn.next_counter(b"contacts:" + self.prefix),
            created_at_us=self.now,
        )
        self.txn.put_contact(self.prefix, prepared.pid, contact)
        self.created.add(prepared.pid)
        national = national_number(prepared.key_type, prepared.cleaned)
        if national and not prepared.invalid_reason:
            self.txn.index_national(self.prefix, national, prepared.pid)
        self.contacts[prepared.pid] = contact
        return contact

    def node(self, pid: bytes, *, fresh: bool = False) -> Node:
        """How linking sees a stored contact; ``fresh`` drops derived state for a replay.

        Derived state is what the records decide: connections, isolation, a
        device's move, and where the contact was first seen (SPEC 3.8).
        """
        contact = self.contact(pid)
        assert contact is not None
        key_type = self.config.key_types.get(contact.type) or KeyType(contact.type)
        policy = self.txn.get_policy(self.prefix, pid) if self.has_policies else None
        usable = not unusable_reason(
            contact.invalid_reason,
            key_type,
            contact.value,
            policy is not None and policy.do_not_link,
        )
        node = Node(
            pid=pid,
            type_name=contact.type,
            usable=usable,
            reassignable=key_type.reassignable,
            type_limit=key_type.max_per_customer,
            first_seen=contact.first_seen,
            priority=key_type.priority,
            never_isolate=policy is not None and policy.never_isolate,
            customer_pid=contact.customer_pid,
        )
        if not fresh:
            node.connections = contact.connections
            node.isolated = contact.isolated
            node.isolated_at = contact.isolated_at
            node.isolated_connections = contact.isolated_connections
            node.moved_at = contact.moved_at
            node.first_key, node.position = self.first_seen_at(pid, contact)
        return node

    def first_seen_at(self, pid: bytes, contact: ContactState) -> tuple[bytes, int]:
        """Where a stored contact was first seen: its first record and its position there."""
        if contact.first_key or pid in self.created:
            return contact.first_key, contact.first_position
        # Written before first-seen keys were stored (or never named by a
        # record): the contact -> record index is in canonical order.
        keys = self.txn.record_keys_of(self.prefix, pid)
        record = self.txn.get_record_by_canonical(self.prefix, keys[0]) if keys else None
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
                stored_edge=lambda a, b: self.txn.has_edge(self.prefix, a, b),
            )
        return self.graph

    def _stored_groups(self, pids: Sequence[bytes]) -> Iterable[tuple[bytes, Sequence[bytes]]]:
        seen: set[bytes] = set()
        for pid in pids:
            for key in self.txn.record_keys_of(self.prefix, pid):
                if key in seen:
                    continue
                seen.add(key)
                record = self.txn.get_record_by_canonical(self.prefix, key)
                if record is not None:
                    yield key, list(record.group_pids)

    def _load(self, pids: Iterable[bytes]) -> LinkGraph:
        graph = self._graph()
        for pid in pids:
            if pid in graph.index:
                continue
            contact = self.contact(pid)
            assert contact is not None
            customer = (
                self.txn.get_customer(self.prefix, contact.customer_pid)
                if contact.customer_pid
                else None
            )
            if customer is None:
                graph.add_node(self.node(pid))
            else:
                graph.add_customer(
                    [self.node(m) for m in customer.contact_pids], customer.watermark
                )
        return graph

    def flush(self) -> None:
        """Write back everything the loaded graph changed."""
        graph = self._flush_evidence()
        if graph is not None:
            self._write_components(graph.components(), graph.nodes)

    def _flush_evidence(self) -> LinkGraph | None:
        """Write the loaded graph's connections and records; return it for its customers."""
        graph = self.graph
        if graph is None:
            return None
        self.graph = None
        for a, b in graph.new_pairs:
            self.txn.put_edge(self.prefix, graph.nodes[a].pid, graph.nodes[b].pid)
        for key, (record, result) in self.pending.items():
            self._store_record(key, record, result)
        self.pending = {}
        return graph

    def apply_batch(
        self, records: Sequence[RecordInput], prepared: Sequence[Sequence[PreparedContact]]
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
            outcomes[i] = self._apply_one(records[i], prepared[i])
        graph = self._flush_evidence()
        if not self.deferred:
            if graph is not None:
                self._write_components(graph.components(), graph.nodes)
        else:
            # One replay for every record of the batch that needed one: a closed
            # region replayed from nothing is canonical whatever was stored.
            region = self._region(self.deferred)
            if graph is not None:
                # The batch is one operation (SPEC 3.5): customers the replay
                # works out again keep the PIDs they had before the batch, so
                # the fast path's customers there are not written in between.
                while True:
                    inside = [
                        c for c in graph.components() if any(n.pid in region.seen for n in c[0])
                    ]
                    missing = {n.pid for c in inside for n in c[0]} - region.seen
                    if not missing:
                        break
                    region = self._region(self.deferred | missing)
                outside = [
                    c for c in graph.components() if not any(n.pid in region.seen for n in c[0])
                ]
                self._write_components(outside, [n for c in outside for n in c[0]])
                # A contact the region holds but does not replay all records of
                # may have been named by a fast-path record of this batch.
                for c in inside:
                    for n in c[0]:
                        if n.pid in region.partial:
                            region.first_seen[n.pid] = (n.first_key, n.position)
            replayed = self._replay(region)
            self.deferred = set()
            for i in order:
                record = records[i]
                key = codec.canonical_key(record.observed_at_us, record.source, record.record_id)
                if key in replayed and not record.deleted:
                    outcomes[i] = (replayed[key].outcome, replayed[key].refused)
        results = []
        for i, record in enumerate(records):
            outcome, refused = outcomes[last[(record.source, record.record_id)]]
            pids = [p.pid for p in prepared[i]]
            results.append(self._result(outcome, pids, refused))
        return results

    def _apply_one(
        self, record: RecordInput, prepared: Sequence[PreparedContact]
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Apply one record of a batch now, or store it and defer it to the batch's replay."""
        key = codec.canonical_key(record.observed_at_us, record.source, record.record_id)
        stored = self.txn.get_record(self.prefix, record.source, record.record_id)
        if record.deleted:
            if stored is not None:
                self._remove_record(stored)
            return APPLIED, []
        pids = list(dict.fromkeys(p.pid for p in prepared))
        for p in prepared:
            self.ensure_contact(p)
        if stored is not None:
            if stored.observed_at_us == record.observed_at_us and list(stored.contact_pids) == pids:
                return stored.outcome, _refused_pairs(stored)
            self._remove_record(stored)
        elif self._load(pids).is_newest(key, pids):
            assert self.graph is not None
            result = self.graph.apply(key, pids)
            self.pending[key] = (self._new_record_state(record, pids), result)
            return result.outcome, result.refused
        self._store_record(key, self._new_record_state(record, pids), None)
        self.deferred.update(pids)
        return APPLIED, []  # replaced by the replay's outcome

    def _new_record_state(self, record: RecordInput, pids: list[bytes]) -> RecordState:
        return RecordState(
            source=record.source,
            record_id=record.record_id,
            observed_at_us=record.observed_at_us,
            contact_pids=pids,
            author=self.actor,
            stored_at_us=self.now,
        )

    def _store_record(self, key: bytes, record: RecordState, result: StepResult | None) -> None:
        if result is not None:
            _set_result(record, result)
        self.txn.put_record(self.prefix, record)
        for pid in record.contact_pids:
            self.txn.index_record(self.prefix, pid, key)

    def _remove_record(self, stored: RecordState) -> None:
        """Take a stored record's evidence out; its contacts join the batch's replay."""
        old_key = codec.canonical_key(stored.observed_at_us, stored.source, stored.record_id)
        for pid in stored.contact_pids:
            self.txn.unindex_record(self.prefix, pid, old_key)
        self.txn.delete_record(self.prefix, stored.source, stored.record_id)
        self.deferred.update(stored.contact_pids)

    def delete_record(self, source: str, record_id: str) -> None:
        stored = self.txn.get_record(self.prefix, source, record_id)
        if stored is None:
            return
        self._remove_record(stored)
        self.replay_region(self.deferred)
        self.deferred = set()

    # -- the replay path -------------------------------------------------------------------

    def replay_region(self, seeds: set[bytes]) -> dict[bytes, StepResult]:
        """Work out again, from their records, the customers around ``seeds``."""
        self.flush()
        return self._replay(self._region(seeds))

    def _region(self, seeds: set[bytes]) -> _Region:
        """The closed region around ``seeds``, as stored.

        The region is closed: every record of a usable contact in it, every
        contact of those records, and every contact of their customers. Nothing
        outside it can change, so the rest of the store is not read.
        """
        region = _Region()
        queue = list(seeds)
        while queue:
            pid = queue.pop()
            if pid in region.seen:
                continue
            contact = self.contact(pid)
            if contact is None:
                continue
            region.seen.add(pid)
            region.contacts.append(pid)
            if contact.customer_pid:
                customer = self.txn.get_customer(self.prefix, contact.customer_pid)
                if customer is not None:
                    queue.extend(customer.contact_pids)
            if pid not in seeds and not self.node(pid).usable:
                region.partial.add(pid)
                continue
            for key in self.txn.record_keys_of(self.prefix, pid):
                if key not in region.records:
                    record = self.txn.get_record_by_canonical(self.prefix, key)
                    if record is not None:
                        region.records[key] = record
                        queue.extend(record.contact_pids)
        return region

    def _replay(self, region: _Region) -> dict[bytes, StepResult]:
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
        for pid in region.contacts:
            self.txn.delete_edges_of(self.prefix, pid)
        for a, b in graph.new_pairs:
            self.txn.put_edge(self.prefix, graph.nodes[a].pid, graph.nodes[b].pid)
        for key, record in records.items():
            before = record.SerializeToString()
            _set_result(record, results[key])
            if record.SerializeToString() != before:
                self.txn.put_record(self.prefix, record)
        self._write_components(graph.components(), graph.nodes)
        return results

    def replayed_account_graph(self) -> tuple[LinkGraph, dict[bytes, StepResult]]:
        """Replay every record of the account on an empty graph (nothing is written)."""
        graph = LinkGraph(
            self.config.policy.max_contacts, self.config.policy.isolate_min_connections
        )
        contacts = sorted(self.txn.iter_contacts(self.prefix), key=lambda item: item[1].first_seen)
        for pid, contact in contacts:
            self.contacts.setdefault(pid, contact)
            graph.add_node(self.node(pid, fresh=True))
        results = graph.replay(
            (codec.canonical_key(r.observed_at_us, r.source, r.record_id), list(r.contact_pids))
            for r in self.txn.iter_records(self.prefix)
        )
        return graph, results

    def rebuild_account(self) -> None:
        """Replay the whole account: after a change of key types or policy."""
        seeds = {pid for pid, _ in self.txn.iter_contacts(self.prefix)}
        if seeds:
            self.replay_region(seeds)

    # -- writing customers back ----------------------------------------------------------------

    def _write_components(
        self, components: list[tuple[list[Node], bytes]], nodes: Iterable[Node]
    ) -> None:
        changes = customer_rules.reconcile(self, components)
        for node in nodes:
            contact = self.contacts[node.pid]
            customer = changes.customer_of[node.pid]
            if (
                contact.customer_pid == customer
                and contact.connections == node.connections
                and contact.isolated == node.isolated
                and contact.isolated_at == node.isolated_at
                and contact.isolated_connections == node.isolated_connections
                and contact.moved_at == node.moved_at
                and contact.first_key == node.first_key
                and contact.first_position == node.position
            ):
                continue
            if contact.isolated != node.isolated:
                self.txn.set_isolated(self.prefix, node.pid, node.isolated)
            contact.customer_pid = customer
            contact.connections = node.connections
            contact.isolated = node.isolated
            contact.isolated_at = node.isolated_at
            contact.isolated_connections = node.isolated_connections
            contact.moved_at = node.moved_at
            contact.first_key = node.first_key
            contact.first_position = node.position
            self.txn.put_contact(self.prefix, node.pid, contact)

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
            seq=self.txn.next_counter(b"changes:" + self.prefix),
            kind=kind,
            customer_pid=customer_pid,
            other_customer_pids=list(others),
            contacts_added=list(added),
            contacts_removed=list(removed),
            actor=self.actor,
            at_us=self.now,
            detail=detail,
        )
        self.txn.append_change(self.prefix, event)
        self.txn.append_history(self.prefix, customer_pid, event)
        for other in event.other_customer_pids:
            self.txn.append_history(self.prefix, other, event)

    def _result(
        self, outcome: int, pids: list[bytes], refused: list[tuple[bytes, bytes]]
    ) -> LinkResult:
        customer = b""
        for pid in pids:
            contact = self.contact(pid)
            if contact is not None and self.node(pid).usable:
                customer = contact.customer_pid
                break
        if not customer and pids:
            contact = self.contact(pids[0])
            customer = contact.customer_pid if contact is not None else b""
        conflicts: list[bytes] = []
        for pair in refused:
            for pid in pair:
                contact = self.contact(pid)
                if contact is not None and contact.customer_pid not in conflicts:
                    conflicts.append(contact.customer_pid)
        return LinkResult(outcome, customer, pids, conflicts)


@dataclass(slots=True)
class _Region:
    """A closed region of contacts and the records that decide their customers."""

    contacts: list[bytes] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    # Contacts whose records are not all in the region: their first-seen key stands.
    partial: set[bytes] = field(default_factory=set)
    # First-seen keys of partial contacts not yet written (pending in a batch).
    first_seen: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    records: dict[bytes, RecordState] = field(default_factory=dict)


class _Reader:
    """A read transaction with the engine's account lookup."""

    def __init__(self, engine: IdentityEngine) -> None:
        self.engine = engine
        self._cm = engine.store.read()
        self.txn: Txn

    def __enter__(self) -> _Reader:
        self.txn = self._cm.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)  # type: ignore[arg-type]

    def config(self, account: str) -> AccountConfig | None:
        return self.engine._config(self.txn, account, create=False)

    def view(self, account: str) -> View:
        """Reads of one account; an unknown account has nothing in it."""
        config = self.config(account) or AccountConfig(account, 0)
        return View(self.txn, config)


@dataclass(slots=True)
class Rebuilt:
    """What a rebuild from every record gives (SPEC 3.2): the partition and the derived state."""

    partition: list[frozenset[bytes]] = field(default_factory=list)
    # Each contact as the rebuild leaves it: connections, isolation, moves, first seen.
    contacts: dict[bytes, Node] = field(default_factory=dict)
    # Each record's step, by canonical key: outcome, group, refused links.
    results: dict[bytes, StepResult] = field(default_factory=dict)


@dataclass(slots=True)
class Preview:
    """How many customers a configuration change would merge or split, with examples."""

    merges: int = 0
    splits: int = 0
    merge_examples: list[list[bytes]] = field(default_factory=list)
    split_examples: list[bytes] = field(default_factory=list)


def _compare(txn: Txn, prefix: bytes, graph: LinkGraph, examples: int) -> Preview:
    preview = Preview()
    parts: dict[bytes, set[int]] = {}
    for index, (nodes, _) in enumerate(graph.components()):
        customers = sorted({n.customer_pid for n in nodes if n.customer_pid})
        for pid in customers:
            parts.setdefault(pid, set()).add(index)
        if len(customers) > 1:
            preview.merges += 1
            if len(preview.merge_examples) < examples:
                preview.merge_examples.append(customers)
    for pid, indexes in sorted(parts.items()):
        if len(indexes) > 1:
            preview.splits += 1
            if len(preview.split_examples) < examples:
                preview.split_examples.append(pid)
    return preview


def manual_record(
    keys: Sequence[ContactKey], observed_at_us: int, record_id: str = ""
) -> RecordInput:
    """The record of an explicit merge; deleting it unmerges (SPEC 3.6)."""
    if len(keys) < 2:
        raise InvalidArgument("contacts needs at least two contacts to merge", field="contacts")
    return RecordInput(MANUAL_SOURCE, record_id or uuid.uuid4().hex, list(keys), observed_at_us)


def _prefix(config: AccountConfig) -> bytes:
    return codec.account_prefix(config.account_id)


def _set_result(record: RecordState, result: StepResult) -> None:
    record.outcome = result.outcome
    del record.group_pids[:]
    record.group_pids.extend(result.group)
    del record.conflict_contact_pids[:]
    for a, b in result.refused:
        record.conflict_contact_pids.extend((a, b))


def _refused_pairs(record: RecordState) -> list[tuple[bytes, bytes]]:
    pids = list(record.conflict_contact_pids)
    return [(pids[i], pids[i + 1]) for i in range(0, len(pids) - 1, 2)]


def _check_record(record: RecordInput, field: str) -> None:
    check_text(record.source, f"{field}.source", MAX_SOURCE_BYTES)
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


def _refuse_identity_change(txn: Txn, config: AccountConfig, key_type: KeyType) -> None:
    """A key type's normalizer and scoping decide contact PIDs: fixed once it has contacts."""
    existing = config.key_types.get(key_type.name)
    if existing is None or not existing.identity_changed(key_type):
        return
    if any(c.type == key_type.name for _, c in txn.iter_contacts(_prefix(config))):
        raise customer_rules.type_in_use(key_type.name)


def _config_version_key(account_id: int) -> bytes:
    return b"config-version:" + codec.account_prefix(account_id)


def _put_account(txn: Txn, config: AccountConfig, now: int) -> None:
    """Store an account's configuration; readers see a new version and reload it."""
    txn.put_account(_account_state(config, now))
    txn.next_counter(_config_version_key(config.account_id))


def _account_state(config: AccountConfig, now: int) -> AccountState:
    return AccountState(
        account_id=config.account_id,
        name=config.name,
        max_contacts=config.policy.max_contacts,
        isolate_min_connections=config.policy.isolate_min_connections,
        key_types=[
            KeyTypeState(
                name=k.name,
                normalizer=k.normalizer,
                source_scoped=k.source_scoped,
                max_per_customer=k.max_per_customer,
                reassignable=k.reassignable,
                anonymous=k.anonymous,
                blocked_values=list(k.blocked_values),
                blocked_patterns=list(k.blocked_patterns),
                priority=k.priority,
            )
            for k in config.key_types.values()
        ],
        created_at_us=now,
    )


def _account_config(state: AccountState) -> AccountConfig:
    return AccountConfig(
        name=state.name,
        account_id=state.account_id,
        key_types={
            k.name: KeyType(
                name=k.name,
                normalizer=k.normalizer,
                source_scoped=k.source_scoped,
                max_per_customer=k.max_per_customer,
                reassignable=k.reassignable,
                anonymous=k.anonymous,
                blocked_values=tuple(k.blocked_values),
                blocked_patterns=tuple(k.blocked_patterns),
                priority=k.priority,  # 0 in a store written before priorities: the default
            )
            for k in state.key_types
        },
        policy=AccountPolicy(state.max_contacts, state.isolate_min_connections),
    )
