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

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from idlink.domain import accounts, engagements, records
from idlink.domain.accounts import MAX_ACCOUNT_BYTES, Accounts
from idlink.domain.contacts import ContactKey, account_secret, prepare_contact
from idlink.domain.keytypes import AccountConfig, AccountPolicy, KeyType
from idlink.domain.linking import Node, StepResult
from idlink.domain.preview import Preview, preview
from idlink.domain.reads import AccountRead, AccountView, KeysRead
from idlink.domain.records import (
    MANUAL_SOURCE,
    MAX_CONTACTS_PER_RECORD,
    LinkResult,
    RecordInput,
    manual_record,
)
from idlink.domain.serving import ServingCache
from idlink.domain.unit import AccountUnit
from idlink.domain.views import (
    INVALID,
    NOT_FOUND,
    ContactView,
    CustomerView,
    Explanation,
    Resolution,
)
from idlink.errors import IdlinkError
from idlink.store.env import Store
from idlink.store.txn import ChangeEvent, EngagementState, Txn

__all__ = [
    "MAX_ACCOUNT_BYTES",
    "MAX_CONTACTS_PER_RECORD",
    "AccountUnit",
    "AccountView",
    "IdentityEngine",
    "MANUAL_SOURCE",
    "LinkResult",
    "Preview",
    "RecordInput",
    "Rebuilt",
    "manual_record",
    "now_us",
]

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
        # Resolve answers (and the service's admissions), exact on every read (docs/serving.md).
        self.serving = ServingCache(store)

    # -- the front door -----------------------------------------------------------------

    def read(self, account: str) -> AccountRead:
        """Reads of one account over one read transaction (use as a context manager).

        An account that does not exist reads as empty (``view.exists`` is False).
        """
        return AccountRead(self.store, self._accounts, account)

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
        return self.submit(account, actor, fn, create=create).result()

    def submit(
        self, account: str, actor: str, fn: Callable[[AccountUnit], T], *, create: bool = True
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` as :meth:`write` does; the future is done once committed, readers told."""

        def run(txn: Txn) -> T:
            now = self.clock()
            if create:
                config = self._accounts.find_or_create(txn, account, now)
            else:
                config = self._accounts.find(txn, account) or AccountConfig(account, 0)
            return fn(AccountUnit(txn.account(config.account_id), config, actor, now))

        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def committed(future: concurrent.futures.Future[T]) -> None:
            error = future.exception()
            if error is None:
                self.notify()
            # A waiter that gave up cancelled ``done``: committed all the same, no one to tell.
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                done.set_exception(error) if error else done.set_result(future.result())

        self.store.submit(run).add_done_callback(committed)
        return done

    def read_keys(self) -> KeysRead:
        """A read transaction for what belongs to no account: API keys by token hash.

        The transaction is the store's :class:`~idlink.store.txn.Txn`; its
        ``account_id(name)`` and ``account(id)`` reach one account's part.
        """
        return KeysRead(self.store)

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
        return self.write(account, actor, lambda unit: accounts.put_key_type(unit, key_type))

    def set_account_policy(
        self, account: str, policy: AccountPolicy, actor: str = ""
    ) -> AccountPolicy:
        return self.write(account, actor, lambda unit: accounts.set_policy(unit, policy))

    # -- records ---------------------------------------------------------------------

    def link(self, account: str, record: RecordInput, actor: str = "") -> LinkResult:
        """Upsert (or delete) one record and return its outcome."""
        return self.ingest(account, [record], actor)[0]

    def ingest(
        self, account: str, batch: Sequence[RecordInput], actor: str = ""
    ) -> list[LinkResult]:
        """Apply a batch of records in one write transaction; results in input order.

        A record named twice in one batch counts once, as its last version.
        """
        return self.submit_ingest(account, batch, actor).result()

    def submit_ingest(
        self, account: str, batch: Sequence[RecordInput], actor: str = ""
    ) -> concurrent.futures.Future[list[LinkResult]]:
        """:meth:`ingest` without waiting: the future is done once the batch committed."""
        good_sources: set[str] = set()
        for i, record in enumerate(batch):
            records.check_record(record, f"records[{i}]", good_sources)
        secret = self.secret(account)
        return self.submit(account, actor, lambda unit: records.ingest(unit, secret, batch))

    def merge_keys(self, account: str, keys: Sequence[ContactKey], actor: str = "") -> LinkResult:
        """Say these contacts are one person: a manual record (SPEC 3.6)."""
        return self.link(account, manual_record(keys, self.clock()), actor or MANUAL_SOURCE)

    def delete_record(self, account: str, source: str, record_id: str, actor: str = "") -> None:
        """Remove a record's evidence; customers it held together split (SPEC 3.6)."""
        records.check_names(source, record_id)
        self.write(
            account,
            actor,
            lambda unit: records.delete_record(unit, source, record_id),
            create=False,
        )

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
        return self.write(
            account,
            actor,
            lambda unit: records.set_contact_policy(unit, secret, key, do_not_link, never_isolate),
        )

    # -- reads -------------------------------------------------------------------------

    def partition(self, account: str) -> list[frozenset[bytes]]:
        """The stored customers of an account, as sets of contact PIDs."""
        with self.read(account) as view:
            return view.partition()

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

    def resolve(
        self, account: str, key: ContactKey, *, create_if_missing: bool = False, actor: str = ""
    ) -> Resolution:
        """Who is this contact? (SPEC 5.1)"""
        answer = self.serving.answer(
            ("resolve", account, key.type, key.value, key.source),
            lambda: self._resolver(account, key),
        )
        return self._maybe_create(account, key, answer, create_if_missing, actor)

    def resolve_all(
        self,
        account: str,
        keys: Sequence[ContactKey],
        *,
        create_if_missing: bool = False,
        actor: str = "",
        field: str = "contacts",
    ) -> list[Resolution]:
        """Resolve every key, all in one read transaction (a create waits for the writer).

        An error names the key by its place: ``contacts[i]`` for ``field`` "contacts".
        """
        answers = []
        with self.store.read() as txn:
            for i, key in enumerate(keys):
                try:
                    answers.append(
                        self.serving.answer_in(
                            txn,
                            ("resolve", account, key.type, key.value, key.source),
                            lambda: self._resolver(account, key),  # noqa: B023 (called at once)
                        )
                    )
                except IdlinkError as exc:
                    raise _located(exc, f"{field}[{i}]") from None
        if not create_if_missing:
            return answers
        out = []
        for i, (key, answer) in enumerate(zip(keys, answers, strict=True)):
            try:
                out.append(self._maybe_create(account, key, answer, True, actor))
            except IdlinkError as exc:
                raise _located(exc, f"{field}[{i}]") from None
        return out

    # A resolve is cached under the account name and the key as asked: the log its
    # entry keeps holds the name's account id and configuration version, so a name
    # switched to another account id (a generation load) finds the entry changed.
    def _resolver(self, account: str, key: ContactKey) -> Callable[[Txn], Resolution]:
        secret = self.secret(account)

        def compute(txn: Txn) -> Resolution:
            view = AccountRead.view_in(txn, self._accounts, account)
            return view.resolve(prepare_contact(secret, view.config, key))

        return compute

    def _maybe_create(
        self,
        account: str,
        key: ContactKey,
        answer: Resolution,
        create_if_missing: bool,
        actor: str,
    ) -> Resolution:
        if answer.status not in (NOT_FOUND, INVALID) or not create_if_missing or answer.customer:
            return answer
        secret = self.secret(account)
        return self.write(account, actor, lambda unit: records.resolve_creating(unit, secret, key))

    def resolve_uncached(self, account: str, key: ContactKey) -> Resolution:
        """The same answer as :meth:`resolve` (no create), computed without the cache."""
        with self.store.read() as txn:
            return self._resolver(account, key)(txn)

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
            return preview(view, self.clock(), key_type, policy, examples)

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
        engagements.check_engagement(channel, direction, summary, engagement_id)
        secret = self.secret(account)
        return self.write(
            account,
            actor,
            lambda unit: engagements.record_engagement(
                unit,
                secret,
                key,
                occurred_at_us=occurred_at_us,
                channel=channel,
                direction=direction,
                summary=summary,
                attributes=attributes or {},
                engagement_id=engagement_id,
            ),
        )

    def list_journey(
        self, account: str, customer_pid: bytes, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[CustomerView, list[EngagementState], str]:
        """One page of a customer's journey across all its contacts (SPEC 6)."""
        with self.read(account) as view:
            customer = view.customer(customer_pid)
            page, token = engagements.journey_page(
                view.txn, customer.pid, [c.pid for c in customer.contacts], page_size, page_token
            )
            return customer, page, token

    def relink_engagement(
        self, account: str, engagement_id: bytes, customer_pid: bytes, actor: str = ""
    ) -> EngagementState:
        """Pin one engagement to a customer; the pin survives later merges (SPEC 3.6)."""
        return self.write(
            account,
            actor,
            lambda unit: engagements.relink_engagement(unit, engagement_id, customer_pid),
            create=False,
        )

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


def _located(exc: IdlinkError, where: str) -> IdlinkError:
    """``exc`` with its field ``contact...`` named ``where...`` (a key of a batch)."""
    if exc.field and exc.field.startswith("contact"):
        exc.field = where + exc.field[len("contact") :]
    return exc


@dataclass(slots=True)
class Rebuilt:
    """What a rebuild from every record gives (SPEC 3.2): the partition and the derived state."""

    partition: list[frozenset[bytes]] = field(default_factory=list)
    # Each contact as the rebuild leaves it: connections, isolation, moves, first seen.
    contacts: dict[bytes, Node] = field(default_factory=dict)
    # Each record's step, by canonical key: outcome, group, refused links.
    results: dict[bytes, StepResult] = field(default_factory=dict)
