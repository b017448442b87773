"""Customer PIDs through merges and splits (SPEC 3.4, 3.5, 3.8).

Given the customers a region of contacts had before an operation and the
components linking computed for it, decide which PID each component carries:

- an old customer's PID goes with the component holding its earliest-seen
  non-reassignable former contact (its *heir*); only a customer that held no
  non-reassignable contact counts its reassignable ones. So a shared device
  never takes a customer PID with it: the customer it leaves keeps its PID;
- a component that is heir to several old customers keeps the oldest one's
  PID (created first; ties: lowest customer PID, which is random, never
  derived from a contact); the others become redirects to it and their
  profiles fill the survivor's gaps, labels joined;
- a component heir to none gets a new random PID; if its earliest-seen
  contact (non-reassignable ones first, as for heirs) belonged to a customer
  before, it records that it split from it and copies its profile. A device
  that moved is no part of the customer it left: counting it would copy that
  person's profile into another person's customer (MXO use case 6).

"Earliest-seen" is the data's order (SPEC 3.8): the canonical key of the
first record naming the contact, then its position there; contacts no record
names come last, in order of arrival. Contact PIDs never decide anything:
they depend on the account secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from idlink.domain.linking import Node, SeenKey
from idlink.errors import FailedPrecondition
from idlink.store.txn import AccountTxn, CustomerState, Profile

MAX_REDIRECT_HOPS = 64


@dataclass
class Reconciled:
    customer_of: dict[bytes, bytes] = field(default_factory=dict)


def new_customer_pid() -> bytes:
    """A random UUID (v4): it says nothing about any contact.

    The bytes of ``uuid.uuid4()`` without building a ``UUID``: 122 random
    bits, the version nibble 4 and the RFC 9562 variant bits 10.
    """
    return _uuid4(os.urandom(16))


def _uuid4(random16: bytes) -> bytes:
    """16 random bytes made a UUIDv4 (the version nibble 4, the variant bits 10)."""
    pid = bytearray(random16)
    pid[6] = pid[6] & 0x0F | 0x40
    pid[8] = pid[8] & 0x3F | 0x80
    return bytes(pid)


def heir_order(node: Node) -> tuple[bool, SeenKey]:
    """Who inherits a customer PID first: non-reassignable, then earliest-seen (SPEC 3.4, 3.5)."""
    return (node.reassignable, node.earliest_seen)


class Emit(Protocol):
    """Appends one event to the change feed (``AccountUnit.emit``)."""

    def __call__(
        self,
        kind: str,
        customer_pid: bytes,
        *,
        others: Iterable[bytes] = (),
        added: Iterable[bytes] = (),
        removed: Iterable[bytes] = (),
        detail: str = "",
    ) -> None: ...


def reconcile(
    txn: AccountTxn, components: list[tuple[list[Node], bytes]], now: int, emit: Emit
) -> Reconciled:
    """Assign customer PIDs to components and write customers, redirects and events."""
    out = Reconciled()
    # Each node's heir order, worked out once (heir_order).
    orders: dict[int, tuple[bool, SeenKey]] = {
        id(n): (n.reassignable, n.earliest_seen) for c in components for n in c[0]
    }
    # Components in the data's order, so that new customers are numbered
    # (created_seq, which decides later merges) the same under any secret.
    components = sorted(components, key=lambda c: min(orders[id(n)] for n in c[0]))
    old: dict[bytes, CustomerState] = {}
    heir: dict[bytes, tuple[tuple[bool, SeenKey], int]] = {}
    for index, (nodes, _) in enumerate(components):
        for node in nodes:
            pid = node.customer_pid
            if not pid:
                continue
            if pid not in old:
                state = txn.get_customer(pid)
                if state is None:
                    continue
                old[pid] = state
            order = orders[id(node)]
            if pid not in heir or order < heir[pid][0]:
                heir[pid] = (order, index)
    heirs_of: dict[int, list[bytes]] = {}
    for pid, (_, index) in heir.items():
        heirs_of.setdefault(index, []).append(pid)
    # The new customers' random PIDs, from one read of the system's randomness.
    randomness = os.urandom(16 * (len(components) - len(heirs_of)))
    at = 0

    for index, (nodes, watermark) in enumerate(components):
        # A customer lists its contacts in the contact order (SPEC 3.8).
        if len(nodes) > 1:
            nodes = sorted(nodes, key=lambda n: (n.priority, orders[id(n)][1]))
        members = [n.pid for n in nodes]
        candidates = heirs_of.get(index, [])
        if candidates:
            survivor = min(candidates, key=lambda p: (old[p].created_seq, p))
            absorbed = sorted(p for p in candidates if p != survivor)
            state = old[survivor]
            before = list(state.contact_pids)
            if not absorbed and set(before) == set(members):
                # The same contacts: nothing to tell the change feed, but the
                # order (where they were first seen, priorities) may have moved.
                if state.watermark != watermark or before != members:
                    state.watermark = watermark
                    del state.contact_pids[:]
                    state.contact_pids.extend(members)
                    txn.put_customer(survivor, state)
                for pid in members:
                    out.customer_of[pid] = survivor
                continue
            for pid in absorbed:
                _absorb(txn, survivor, state, pid, old[pid])
            customer_pid = survivor
            kind = "merged" if absorbed else "updated"
            others = absorbed
        else:
            customer_pid = _uuid4(randomness[at : at + 16])
            at += 16
            # Non-reassignable contacts first: a device that moves joins the
            # other side, and that side is no part of the customer it left.
            earliest = min(nodes, key=lambda n: orders[id(n)])
            split_from = earliest.customer_pid if earliest.customer_pid in old else b""
            state = CustomerState(
                created_seq=txn.next_customer_seq(),
                created_at_us=now,
                split_from=split_from,
            )
            if split_from:
                state.profile.CopyFrom(old[split_from].profile)
            before = []
            kind = "split" if split_from else "created"
            others = [split_from] if split_from else []
        del state.contact_pids[:]
        state.contact_pids.extend(members)
        state.watermark = watermark
        state.updated_at_us = now
        txn.put_customer(customer_pid, state)
        for pid in members:
            out.customer_of[pid] = customer_pid
        before_set, after_set = set(before), set(members)
        emit(
            kind,
            customer_pid,
            others=others,
            added=[p for p in members if p not in before_set],
            removed=[p for p in before if p not in after_set],
        )
    return out


def _absorb(
    txn: AccountTxn, survivor: bytes, state: CustomerState, pid: bytes, other: CustomerState
) -> None:
    """Fold one merged customer into the survivor: profile, pins, redirect."""
    merge_profile(state.profile, other.profile)
    for engagement_id in txn.pins_of(pid):
        txn.delete_pin(pid, engagement_id)
        txn.put_pin(survivor, engagement_id)
    txn.delete_customer(pid)
    txn.put_redirect(pid, survivor)


def merge_profile(survivor: Profile, other: Profile) -> None:
    """The survivor's values win, its gaps are filled from the other, labels are joined."""
    for name, value in other.attributes.items():
        if name not in survivor.attributes:
            survivor.attributes[name] = value
    labels = list(survivor.labels)
    for label in other.labels:
        if label not in labels:
            labels.append(label)
    del survivor.labels[:]
    survivor.labels.extend(labels)
    if not survivor.preferences:
        survivor.preferences = other.preferences


def follow_redirects(txn: AccountTxn, pid: bytes) -> tuple[bytes, bool]:
    """The current PID of a customer PID that may have been merged away."""
    current, redirected = pid, False
    for _ in range(MAX_REDIRECT_HOPS):
        target = txn.get_redirect(current)
        if target is None:
            return current, redirected
        current, redirected = target, True
    return current, redirected


def type_in_use(name: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"key type {name!r} has contacts: its normalizer and source scoping cannot change",
        reason="KEY_TYPE_IN_USE",
    )
