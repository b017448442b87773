"""Reads of one account: resolve, suggestions, explanations, history, isolated contacts.

:class:`AccountView` is what ``IdentityEngine.read(account)`` gives: the
account's part of one read transaction and its configuration. Every answer is
built from one consistent snapshot (SPEC 3.7, 5).
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

from idlink.domain.accounts import Accounts
from idlink.domain.contacts import PreparedContact, national_candidates, unusable_reason
from idlink.domain.keytypes import AccountConfig, default_priority
from idlink.domain.linking import CAPPED, CONFLICT, SeenKey, seen_key
from idlink.domain.pids import follow_redirects
from idlink.domain.views import (
    FOUND,
    INVALID,
    MAX_SUGGESTIONS,
    NOT_FOUND,
    NOT_LINKABLE,
    ContactView,
    CustomerView,
    Explanation,
    Hop,
    Resolution,
    Suggestion,
    isolated_reason,
)
from idlink.errors import InvalidArgument, NotFound
from idlink.store import codec
from idlink.store.env import Store
from idlink.store.txn import (
    AccountTxn,
    ChangeEvent,
    ContactState,
    CustomerState,
    RecordState,
    Txn,
)


class AccountView:
    """Reads of one account over one transaction (``IdentityEngine.read(account)``).

    An account that does not exist reads as empty: ``exists`` is False and its
    configuration is the defaults.
    """

    def __init__(self, txn: AccountTxn, config: AccountConfig) -> None:
        self.txn = txn
        self.config = config
        self._has_policies: bool | None = None

    @property
    def exists(self) -> bool:
        return self.config.account_id != 0

    @property
    def has_policies(self) -> bool:
        """Whether any contact of the account has a policy: most accounts have none."""
        if self._has_policies is None:
            self._has_policies = self.txn.policy_count() > 0
        return self._has_policies

    def partition(self) -> list[frozenset[bytes]]:
        """The stored customers, as sets of contact PIDs."""
        return [frozenset(c.contact_pids) for _, c in self.txn.iter_customers()]

    # -- contacts -----------------------------------------------------------------

    def unlinkable_reason(self, pid: bytes, contact: ContactState) -> str:
        """Why a contact links to nothing ("" when it is linkable)."""
        policy = self.txn.get_policy(pid) if self.has_policies else None
        reason = unusable_reason(
            contact.invalid_reason,
            self.config.key_types.get(contact.type),
            contact.value,
            policy is not None and policy.do_not_link,
        )
        if not reason and contact.isolated:
            return "ISOLATED"
        return reason

    def contact_order(self, contact: ContactState) -> tuple[int, SeenKey]:
        """A stored contact's place in the contact order (SPEC 3.8)."""
        key_type = self.config.key_types.get(contact.type)
        priority = key_type.priority if key_type is not None else default_priority(contact.type)
        return priority, seen_key(contact.first_key, contact.first_position, contact.first_seen)

    def contact_view(self, pid: bytes, contact: ContactState) -> ContactView:
        reason = self.unlinkable_reason(pid, contact)
        return ContactView(
            pid,
            contact.type,
            contact.value,
            contact.source,
            not reason,
            reason,
            contact.connections,
        )

    # -- customers ----------------------------------------------------------------

    def customer(self, pid: bytes, known: tuple[bytes, ContactState] | None = None) -> CustomerView:
        """A customer by PID, following merges (SPEC 3.5).

        ``known`` is a contact already read in this transaction (its PID and
        state): a member with that PID is not read again.
        """
        current, redirected = follow_redirects(self.txn, pid)
        state = self.txn.get_customer(current)
        if state is None:
            raise NotFound("customer not found")
        view = self._customer_view(current, state, known)
        if redirected:
            view.redirected_from = pid
        return view

    def _customer_view(
        self, pid: bytes, state: CustomerState, known: tuple[bytes, ContactState] | None = None
    ) -> CustomerView:
        contacts = []
        anonymous = True
        known_pid = known[0] if known is not None else None
        for contact_pid in state.contact_pids:
            if contact_pid == known_pid:
                contact: ContactState | None = known[1]  # type: ignore[index]
            else:
                contact = self.txn.get_contact(contact_pid)
            if contact is None:
                continue
            contacts.append(self.contact_view(contact_pid, contact))
            key_type = self.config.key_types.get(contact.type)
            if key_type is None or not key_type.anonymous:
                anonymous = False
        return CustomerView(
            pid, contacts, anonymous, state.profile, state.created_at_us, state.split_from
        )

    # -- resolve ------------------------------------------------------------------------

    def resolve(self, prepared: PreparedContact) -> Resolution:
        """Answer "who is this?" for a prepared contact (SPEC 5.1)."""
        contact = self.txn.get_contact(prepared.pid)
        if contact is None:
            if prepared.invalid_reason:
                return Resolution(INVALID, prepared.pid, reason=prepared.invalid_reason)
            return Resolution(
                NOT_FOUND,
                prepared.pid,
                suggestions=self._national_suggestions(prepared),
                reason="no customer holds this contact",
            )
        customer = (
            self.customer(contact.customer_pid, (prepared.pid, contact))
            if contact.customer_pid
            else None
        )
        reason = self.unlinkable_reason(prepared.pid, contact)
        if reason in ("DO_NOT_LINK", "ISOLATED"):
            status = NOT_LINKABLE
        elif reason:
            status = INVALID
        else:
            status = FOUND
        suggestions = self.suggestions(prepared, contact, customer, linkable=not reason)
        if reason == "ISOLATED":
            reason = isolated_reason(contact)
        return Resolution(status, prepared.pid, customer, suggestions, reason)

    def suggestions(
        self,
        prepared: PreparedContact,
        contact: ContactState,
        customer: CustomerView | None,
        *,
        linkable: bool,
    ) -> list[Suggestion]:
        """Candidate customers, best first (SPEC 5.2)."""
        own = customer.pid if customer is not None else b""
        scores: dict[bytes, int] = {}
        reasons: dict[bytes, str] = {}
        for record in self._suggesting_records(prepared.pid, contact, linkable):
            if not linkable:
                for other in record.contact_pids:
                    self._suggest_contact(other, own, "SHARED_RECORD", scores, reasons)
            if record.outcome in (CAPPED, CONFLICT):
                for other in record.conflict_contact_pids:
                    self._suggest_contact(other, own, "REFUSED_LINK", scores, reasons)
            if contact.moved_at and (
                codec.canonical_key(record.observed_at_us, record.source, record.record_id)
                < contact.moved_at
            ):
                for other in record.contact_pids:
                    self._suggest_contact(other, own, "DEVICE_MOVED", scores, reasons)
        result = [Suggestion(pid, reasons[pid], float(score)) for pid, score in scores.items()]
        result.extend(s for s in self._national_suggestions(prepared) if s.customer_pid != own)
        result.sort(key=lambda s: (-s.score, s.customer_pid))
        return result[:MAX_SUGGESTIONS]

    def _suggesting_records(
        self, pid: bytes, contact: ContactState, linkable: bool
    ) -> list[RecordState]:
        """The records :meth:`suggestions` reads: none when none of them can suggest.

        A linkable contact's records suggest only when one refused a link or the
        contact moved; where the account keeps refusal marks, an unmarked
        contact that never moved is named by no refused record.
        """
        if linkable and self.config.marks_refusals and not contact.refused and not contact.moved_at:
            return []
        return self.txn.records_of(pid)  # read once: this is the resolve path

    def _suggest_contact(
        self,
        pid: bytes,
        own: bytes,
        reason: str,
        scores: dict[bytes, int],
        reasons: dict[bytes, str],
    ) -> None:
        contact = self.txn.get_contact(pid)
        if contact is None or not contact.customer_pid or contact.customer_pid == own:
            return
        customer = contact.customer_pid
        scores[customer] = scores.get(customer, 0) + 1
        reasons.setdefault(customer, reason)

    def _national_suggestions(self, prepared: PreparedContact) -> list[Suggestion]:
        found: dict[bytes, Suggestion] = {}
        for national in national_candidates(prepared.key_type, prepared.cleaned):
            for pid in self.txn.pids_with_national(national):
                contact = self.txn.get_contact(pid)
                if contact is None or not contact.customer_pid:
                    continue
                score = 1.0 if national == prepared.cleaned else 0.8
                best = found.get(contact.customer_pid)
                # Ties name the smallest value, not the first in PID order (SPEC 3.8).
                if (
                    best is None
                    or best.score < score
                    or (best.score == score and best.reason > f"NATIONAL_NUMBER: {contact.value}")
                ):
                    found[contact.customer_pid] = Suggestion(
                        contact.customer_pid, f"NATIONAL_NUMBER: {contact.value}", score
                    )
        return sorted(found.values(), key=lambda s: (-s.score, s.customer_pid))

    # -- explain, history ---------------------------------------------------------------------

    def explain(self, a: PreparedContact, b: PreparedContact | None) -> Explanation:
        """Why two contacts are one customer (the chain of records), or why one is alone."""
        contact_a = self.txn.get_contact(a.pid)
        if contact_a is None:
            raise NotFound("contact not found", field="contact")
        if b is None:
            return self._explain_alone(a.pid, contact_a)
        contact_b = self.txn.get_contact(b.pid)
        if contact_b is None:
            raise NotFound("other contact not found", field="other")
        if contact_a.customer_pid != contact_b.customer_pid or not contact_a.customer_pid:
            explanation = Explanation(False)
            for pid, contact in ((a.pid, contact_a), (b.pid, contact_b)):
                explanation.reasons.extend(self._explain_alone(pid, contact).reasons)
            if not explanation.reasons:
                explanation.reasons.append("DIFFERENT_CUSTOMERS: no applied record joins them")
            return explanation
        hops = self._chain(a.pid, b.pid, contact_a.customer_pid)
        return Explanation(True, contact_a.customer_pid, hops)

    def _explain_alone(self, pid: bytes, contact: ContactState) -> Explanation:
        reason = self.unlinkable_reason(pid, contact)
        reasons = []
        if reason == "ISOLATED":
            reasons.append(isolated_reason(contact))
        elif reason:
            reasons.append(reason)
        for record in self.txn.records_of(pid):
            if record.outcome == CAPPED:
                reasons.append(f"CAPPED: record {record.source}/{record.record_id}")
            elif record.outcome == CONFLICT:
                reasons.append(f"CONFLICT: record {record.source}/{record.record_id}")
        return Explanation(False, contact.customer_pid, reasons=reasons)

    def _chain(self, start: bytes, goal: bytes, customer_pid: bytes) -> list[Hop]:
        """Shortest chain of applied records from one contact to another."""
        state = self.txn.get_customer(customer_pid)
        members = set(state.contact_pids) if state is not None else set()
        previous: dict[bytes, tuple[bytes, Hop] | None] = {start: None}
        queue = deque([start])
        while queue:
            pid = queue.popleft()
            if pid == goal:
                break
            for record in self.txn.records_of(pid):
                if pid not in record.group_pids:
                    continue
                for other in record.group_pids:
                    if other in previous or other not in members:
                        continue
                    hop = Hop(record.source, record.record_id, record.observed_at_us, pid, other)
                    previous[other] = (pid, hop)
                    queue.append(other)
        if goal not in previous:
            return []
        hops = []
        node = goal
        while previous[node] is not None:
            parent, hop = previous[node]  # type: ignore[misc]
            hops.append(hop)
            node = parent
        return hops[::-1]

    def history(self, customer_pid: bytes) -> list[ChangeEvent]:
        events = self.txn.history_of(customer_pid)
        if (
            not events
            and self.txn.get_customer(customer_pid) is None
            and self.txn.get_redirect(customer_pid) is None
        ):
            raise NotFound("customer not found")
        return events

    def isolated(self, after: bytes, limit: int) -> list[ContactView]:
        """Isolated contacts in the contact order (SPEC 3.8), those after contact ``after``.

        The order comes from the data, not from the index (which is in PID
        order), so every page sorts the isolated contacts: they are few, a
        review list, not a bulk export.
        """
        found = []
        for pid in self.txn.iter_isolated():
            contact = self.txn.get_contact(pid)
            if contact is not None:
                found.append((self.contact_order(contact), pid, contact))
        found.sort(key=lambda item: item[0])
        if after:
            last = self.txn.get_contact(after)
            if last is None:
                raise InvalidArgument(
                    "page_token names a contact that no longer exists; list again from the start",
                    field="page_token",
                )
            start = self.contact_order(last)
            found = [item for item in found if item[0] > start]
        return [self.contact_view(pid, contact) for _, pid, contact in found[:limit]]


class AccountRead:
    """The context manager :meth:`IdentityEngine.read` gives: an AccountView while open."""

    __slots__ = ("_accounts", "_account", "_cm")

    def __init__(self, store: Store, accounts: Accounts, account: str) -> None:
        self._accounts = accounts
        self._account = account
        self._cm = store.read()

    def __enter__(self) -> AccountView:
        txn = self._cm.__enter__()
        try:
            return self.view_in(txn, self._accounts, self._account)
        except BaseException as exc:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise

    @staticmethod
    def view_in(txn: Txn, accounts: Accounts, account: str) -> AccountView:
        """The view of ``account`` in an open read transaction."""
        config = accounts.find(txn, account)
        if config is None:
            config = AccountConfig(account, 0)
        return AccountView(txn.account(config.account_id), config)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cm.__exit__(exc_type, exc, tb)


class KeysRead:
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
