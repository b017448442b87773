"""The identity engine: the one entry of the domain.

Every read of an account goes through :meth:`IdentityEngine.read`, which gives
an :class:`~idlink.domain.reads.AccountView` over one read transaction, and
every write through :meth:`IdentityEngine.write`, which runs an operation on
the store's writer thread with an :class:`~idlink.domain.unit.AccountUnit`
(the account's part of the transaction, its configuration, the clock, the
actor and the change feed), so that it commits whole or not at all. Linking
rules live in :mod:`linking`; the use cases below load the part of the graph
an operation touches, run the rules, and write back what changed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from idlink.domain.accounts import (
    MAX_ACCOUNT_BYTES,
    Accounts,
    put_config,
    refuse_identity_change,
)
from idlink.domain.contacts import (
    MAX_RECORD_ID_BYTES,
    MAX_SOURCE_BYTES,
    ContactKey,
    account_secret,
    check_text,
    prepare_contact,
)
from idlink.domain.customers import follow_redirects
from idlink.domain.journey import journey_page
from idlink.domain.keytypes import AccountConfig, AccountPolicy, KeyType
from idlink.domain.linking import LinkGraph, Node, StepResult
from idlink.domain.reads import AccountView
from idlink.domain.unit import AccountUnit, LinkResult, RecordInput
from idlink.domain.views import (
    CREATED,
    FOUND,
    INVALID,
    NOT_FOUND,
    ContactView,
    CustomerView,
    Explanation,
    Resolution,
)
from idlink.errors import InvalidArgument, NotFound
from idlink.store.env import Store
from idlink.store.txn import ChangeEvent, ContactPolicyState, EngagementState, Txn

__all__ = [
    "MAX_ACCOUNT_BYTES",
    "MAX_CONTACTS_PER_RECORD",
    "AccountUnit",
    "AccountView",
    "IdentityEngine",
    "LinkResult",
    "Preview",
    "RecordInput",
    "Rebuilt",
    "manual_record",
    "now_us",
]

MAX_CONTACTS_PER_RECORD = 64
MANUAL_SOURCE = "manual"
MAX_SUMMARY_CHARS = 16384
MAX_SEQ = (1 << 64) - 1

T = TypeVar("T")


def now_us() -> int:
    """The wall clock in microseconds: the engine's clock unless one is given."""
    return time.time_ns() // 1000


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
        # The one clock (microseconds): every layer that stamps a time takes it from here.
        self.clock = clock
        self._master = master_secret
        self._secrets: dict[str, bytes] = {}
        self._accounts = Accounts()
        self._changed = threading.Condition()

    # -- the front door -----------------------------------------------------------------

    def read(self, account: str) -> _Read:
        """Reads of one account over one read transaction (use as a context manager).

        An account that does not exist reads as empty (``view.exists`` is False).
        """
        return _Read(self, account)

    def write(
        self,
        account: str,
        actor: str,
        fn: Callable[[AccountUnit], T],
        *,
        create: bool = True,
    ) -> T:
        """Run ``fn`` on the writer thread with the account's unit of work; commit; tell readers.

        With ``create`` (the default) an account that does not exist is
        created with the defaults; without it the unit of a missing account
        holds nothing (every read of it finds nothing), so ``fn`` answers
        NOT_FOUND as it would for anything else that is not there.
        """

        def run(txn: Txn) -> T:
            now = self.clock()
            if create:
                config = self._accounts.find_or_create(txn, account, now)
            else:
                config = self._accounts.find(txn, account) or AccountConfig(account, 0)
            return fn(AccountUnit(txn.account(config.account_id), config, actor, now))

        result = self.store.write(run)
        self.notify()
        return result

    def read_keys(self) -> _ReadKeys:
        """A read transaction for what belongs to no account: API keys by token hash.

        The transaction is the store's :class:`~idlink.store.txn.Txn`; its
        ``account_id(name)`` and ``account(id)`` reach one account's part.
        """
        return _ReadKeys(self.store)

    def write_keys(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in a write transaction for what belongs to no account (API keys, audit)."""
        return self.store.write(fn)

    def secret(self, account: str) -> bytes:
        found = self._secrets.get(account)
        if found is None:
            found = self._secrets[account] = account_secret(self._master, account)
        return found

    # -- accounts and configuration ------------------------------------------------

    def account_config(self, account: str) -> AccountConfig:
        """The account's key types and policy (the defaults for a new account)."""
        with self.read(account) as view:
            return view.config

    def put_key_type(self, account: str, key_type: KeyType, actor: str = "") -> KeyType:
        """Add or change a key type; links are worked out again when linking rules change."""

        def run(unit: AccountUnit) -> KeyType:
            config = unit.config
            existing = config.key_types.get(key_type.name)
            refuse_identity_change(unit.txn, config, key_type)
            updated = config.with_key_type(key_type)
            put_config(unit.txn, updated, unit.now)
            if existing is not None and existing != key_type:
                unit.config = updated
                unit.rebuild_account()
            return key_type

        return self.write(account, actor, run)

    def set_account_policy(
        self, account: str, policy: AccountPolicy, actor: str = ""
    ) -> AccountPolicy:
        def run(unit: AccountUnit) -> AccountPolicy:
            config = unit.config
            updated = config.with_policy(policy)
            put_config(unit.txn, updated, unit.now)
            if updated.policy != config.policy:
                unit.config = updated
                unit.rebuild_account()
            return policy

        return self.write(account, actor, run)

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

        def run(unit: AccountUnit) -> list[LinkResult]:
            prepared = [
                [
                    prepare_contact(secret, unit.config, key, f"records[{i}].contacts[{j}]")
                    for j, key in enumerate(record.contacts)
                ]
                for i, record in enumerate(records)
            ]
            return unit.apply_batch(records, prepared)

        return self.write(account, actor, run)

    def merge_keys(self, account: str, keys: Sequence[ContactKey], actor: str = "") -> LinkResult:
        """Say these contacts are one person: a manual record (SPEC 3.6)."""
        return self.link(account, manual_record(keys, self.clock()), actor or MANUAL_SOURCE)

    def delete_record(self, account: str, source: str, record_id: str, actor: str = "") -> None:
        """Remove a record's evidence; customers it held together split (SPEC 3.6)."""
        check_text(source, "source", MAX_SOURCE_BYTES)
        check_text(record_id, "record_id", MAX_RECORD_ID_BYTES)

        def run(unit: AccountUnit) -> None:
            if unit.txn.get_record(source, record_id) is None:
                raise NotFound(f"record {source}/{record_id} not found")
            unit.delete_record(source, record_id)

        self.write(account, actor, run, create=False)

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

        def run(unit: AccountUnit) -> bytes:
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
            contact = txn.get_contact(prepared.pid)
            if contact is not None:
                unit.replay_region({prepared.pid})
                replayed = txn.get_contact(prepared.pid)
                assert replayed is not None
                unit.emit(
                    "policy_changed",
                    replayed.customer_pid,
                    detail=f"do_not_link={policy.do_not_link} never_isolate={policy.never_isolate}",
                )
            return prepared.pid

        return self.write(account, actor, run)

    # -- reads -------------------------------------------------------------------------

    def partition(self, account: str) -> list[frozenset[bytes]]:
        """The stored customers of an account, as sets of contact PIDs."""
        with self.read(account) as view:
            return [frozenset(c.contact_pids) for _, c in view.txn.iter_customers()]

    def rebuild_partition(self, account: str) -> list[frozenset[bytes]]:
        """The customers a rebuild from every record would give (SPEC 3.2), computed in memory."""
        return self.rebuild(account).partition

    def rebuild(self, account: str) -> Rebuilt:
        """Everything a rebuild from every record would give (SPEC 3.2), computed in memory."""
        with self.read(account) as view:
            if not view.exists:
                return Rebuilt()
            unit = AccountUnit(view.txn, view.config, "", self.clock())
            graph, results = unit.replayed_account_graph()
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
        with self.read(account) as view:
            prepared = prepare_contact(secret, view.config, key)
            answer = view.resolve(prepared)
        if answer.status not in (NOT_FOUND, INVALID) or not create_if_missing or answer.customer:
            return answer

        def run(unit: AccountUnit) -> Resolution:
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

        return self.write(account, actor, run)

    def get_customer(self, account: str, customer_pid: bytes) -> CustomerView:
        """A customer by PID; an old PID of a merged customer finds the survivor."""
        with self.read(account) as view:
            return view.customer(customer_pid)

    def explain(self, account: str, a: ContactKey, b: ContactKey | None = None) -> Explanation:
        """The chain of records that links two contacts, or why a contact stands alone."""
        secret = self.secret(account)
        with self.read(account) as view:
            first = prepare_contact(secret, view.config, a)
            second = prepare_contact(secret, view.config, b, "other") if b is not None else None
            return view.explain(first, second)

    def history(self, account: str, customer_pid: bytes) -> list[ChangeEvent]:
        with self.read(account) as view:
            return view.history(customer_pid)

    def list_isolated(
        self, account: str, after: bytes = b"", limit: int = 100
    ) -> list[ContactView]:
        with self.read(account) as view:
            return view.isolated(after, limit)

    def changes_after(self, account: str, seq: int, limit: int = 500) -> list[ChangeEvent]:
        """Change-feed events with a sequence number above ``seq`` (SPEC 7)."""
        with self.read(account) as view:
            if not view.exists or seq >= MAX_SEQ:
                return []
            return view.txn.changes_after(seq, limit)

    def preview(
        self,
        account: str,
        *,
        key_type: KeyType | None = None,
        policy: AccountPolicy | None = None,
        examples: int = 5,
    ) -> Preview:
        """What a change of key type or policy would do, computed from the records (SPEC 3.7)."""
        with self.read(account) as view:
            if not view.exists:
                return Preview()
            config = view.config
            changed = config
            if key_type is not None:
                refuse_identity_change(view.txn, config, key_type)
                changed = changed.with_key_type(key_type)
            if policy is not None:
                changed = changed.with_policy(policy)
            graph, _ = AccountUnit(view.txn, changed, "", self.clock()).replayed_account_graph()
            return _compare(graph, examples)

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

        def run(unit: AccountUnit) -> EngagementState:
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
                attributes=attributes or {},
                recorded_at_us=unit.now,
            )
            unit.txn.put_engagement(engagement)
            return engagement

        return self.write(account, actor, run)

    def list_journey(
        self, account: str, customer_pid: bytes, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[CustomerView, list[EngagementState], str]:
        """One page of a customer's journey across all its contacts (SPEC 6)."""
        with self.read(account) as view:
            customer = view.customer(customer_pid)
            page, token = journey_page(
                view.txn,
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

        def run(unit: AccountUnit) -> EngagementState:
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

        return self.write(account, actor, run, create=False)

    # -- change notifications ---------------------------------------------------------------

    def notify(self) -> None:
        """Wake every reader waiting for a change (after a commit)."""
        with self._changed:
            self._changed.notify_all()

    _notify = notify  # the name the service layer used before ``notify``

    def wait_for_change(self, timeout: float) -> None:
        """Block until some write commits or the timeout passes."""
        with self._changed:
            self._changed.wait(timeout)


class _Read:
    """The context manager :meth:`IdentityEngine.read` gives: an AccountView while open."""

    __slots__ = ("_engine", "_account", "_cm")

    def __init__(self, engine: IdentityEngine, account: str) -> None:
        self._engine = engine
        self._account = account
        self._cm = engine.store.read()

    def __enter__(self) -> AccountView:
        txn = self._cm.__enter__()
        try:
            config = self._engine._accounts.find(txn, self._account)
        except BaseException as exc:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if config is None:
            config = AccountConfig(self._account, 0)
        return AccountView(txn.account(config.account_id), config)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cm.__exit__(exc_type, exc, tb)


class _ReadKeys:
    """The context manager :meth:`IdentityEngine.read_keys` gives: the store's Txn while open."""

    __slots__ = ("_cm",)

    def __init__(self, store: Store) -> None:
        self._cm = store.read()

    def __enter__(self) -> Txn:
        return self._cm.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cm.__exit__(exc_type, exc, tb)


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


def _compare(graph: LinkGraph, examples: int) -> Preview:
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
