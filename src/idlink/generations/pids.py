"""Customer PIDs of a generation by the rules of SPEC 3.5 (3.4, 3.8), on plain arrays.

The same rule as ``domain/pids.py`` (``reconcile``, ``heir_order``),
which works on a write transaction; here it works on whole-account arrays,
and ``tests/generations`` checks the two give the same PIDs:

- each old customer's PID goes to its *heir*: the new part holding its first
  former contact in the heir order (non-reassignable first, then
  earliest-seen), so a device that moved never takes a PID with it;
- a part heir to several old customers keeps the oldest one's PID (smallest
  ``created_seq``, ties: lowest customer PID); the others are merged into it;
- a part heir to none gets a new random PID (UUIDv4); it split from the old
  customer of its first contact in the heir order, if that contact had one.

Kinds in the change list: ``unchanged`` (heir to one customer, the same
contacts), ``updated`` (heir to one, contacts added or removed), ``merged``
(heir to several), ``split`` (new PID, split from an old customer),
``created`` (new PID, no old customer): the change feed's kinds.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from idlink.generations.columns import lex_order

UNCHANGED, UPDATED, MERGED, SPLIT, CREATED = "unchanged", "updated", "merged", "split", "created"
KINDS = (UNCHANGED, UPDATED, MERGED, SPLIT, CREATED)


def random_pids(count: int) -> list[bytes]:
    """``count`` random UUIDv4s, as ``uuid.uuid4().bytes`` makes them."""
    raw = np.frombuffer(os.urandom(16 * count), np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return [row.tobytes() for row in raw]


@dataclass(slots=True)
class Assignment:
    """Customer PIDs of the parts of a generation, and how each part came from the old ones."""

    part_of: np.ndarray  # contact -> part 0..parts-1
    members_offsets: np.ndarray  # part -> slice of members, contacts in the contact order
    members: np.ndarray
    customer_pid: list[bytes]  # part -> PID
    kind: list[str]
    others: list[list[bytes]]  # merged: the PIDs absorbed; split: the PID split from
    added_offsets: np.ndarray
    added: np.ndarray
    removed_offsets: np.ndarray
    removed: np.ndarray

    @property
    def parts(self) -> int:
        return len(self.customer_pid)

    def counts(self) -> dict[str, int]:
        found = Counter(self.kind)
        return {"customers": self.parts, **{k: found.get(k, 0) for k in KINDS}}

    def customer_pid_of_contacts(self, labels: np.ndarray) -> pa.Array:
        pids = pa.array(self.customer_pid, pa.binary())
        return pids.take(pa.array(self.part_of))

    def _lists(self, pids: pa.Array, offsets: np.ndarray, values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(
            pa.array(offsets.astype(np.int32)), pids.take(pa.array(values))
        )

    def customers_table(self, pids: pa.Array) -> pa.Table:
        return pa.table(
            {
                "customer_pid": pa.array(self.customer_pid, pa.binary()),
                "contact_pids": self._lists(pids, self.members_offsets, self.members),
            }
        )

    def changes_table(self, pids: pa.Array) -> pa.Table:
        return pa.table(
            {
                "customer_pid": pa.array(self.customer_pid, pa.binary()),
                "kind": pa.array(self.kind, pa.string()),
                "other_customer_pids": pa.array(self.others, pa.list_(pa.binary())),
                "contacts_added": self._lists(pids, self.added_offsets, self.added),
                "contacts_removed": self._lists(pids, self.removed_offsets, self.removed),
            }
        )


def _grouped(keys: np.ndarray, values: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of ``values`` grouped by ``keys`` (stable: values keep their order within a group)."""
    order = np.argsort(keys, kind="stable")
    offsets = np.zeros(groups + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=groups), out=offsets[1:])
    return offsets, values[order]


def assign(
    labels: np.ndarray,
    *,
    heir_rank: np.ndarray,
    contact_rank: np.ndarray,
    old_customer: np.ndarray,
    old_created_seq: np.ndarray,
    old_pids: Sequence[bytes],
) -> Assignment:
    """Assign customer PIDs to the parts ``labels`` makes (contact -> any integer label).

    ``heir_rank`` and ``contact_rank`` are each contact's place in the heir
    order and in the contact order; ``old_customer`` its customer before (a
    row of the old customers, -1 for none).
    """
    n = len(labels)
    # Parts numbered in the heir order of their first contact, as the engine
    # numbers new customers (domain.pids.reconcile): the same under any secret.
    by_heir = np.argsort(heir_rank, kind="stable")
    _, first_of_label, label_index = np.unique(
        labels[by_heir], return_index=True, return_inverse=True
    )
    order_of_label = np.argsort(np.argsort(first_of_label, kind="stable"), kind="stable")
    part_of = np.empty(n, np.int64)
    part_of[by_heir] = order_of_label[label_index]
    parts = len(first_of_label)
    old_count = len(old_pids)

    # Each old customer's heir: the part of its first former contact in the heir order.
    old_sorted = old_customer[by_heir]
    has_old = old_sorted >= 0
    olds, first = np.unique(old_sorted[has_old], return_index=True)
    heir_part = np.full(old_count, -1, np.int64)
    heir_part[olds] = part_of[by_heir][has_old][first]
    # Each part's survivor: its oldest heir-to customer (created_seq, then PID).
    pid_order = np.empty(old_count, np.int64)
    pid_order[np.array(sorted(range(old_count), key=lambda i: old_pids[i]), np.int64)] = np.arange(
        old_count
    )
    heirs = np.flatnonzero(heir_part >= 0)
    ranked = heirs[lex_order((pid_order[heirs], old_created_seq[heirs], heir_part[heirs]))]
    survivor = np.full(parts, -1, np.int64)
    absorbed: dict[int, list[int]] = {}
    for old in ranked.tolist():
        part = int(heir_part[old])
        if survivor[part] < 0:
            survivor[part] = old
        else:
            absorbed.setdefault(part, []).append(old)

    sizes = np.bincount(part_of, minlength=parts)
    old_sizes = np.bincount(old_customer[old_customer >= 0], minlength=old_count)
    in_survivor = (old_customer >= 0) & (survivor[part_of] == old_customer)
    same = np.bincount(part_of[in_survivor], minlength=parts)
    first_contact = by_heir[np.sort(first_of_label)]  # part -> its first contact (heir order)
    new_needed = int(np.count_nonzero(survivor < 0))
    fresh = iter(random_pids(new_needed))
    customer_pid: list[bytes] = []
    kind: list[str] = []
    others: list[list[bytes]] = []
    for part in range(parts):
        old = int(survivor[part])
        if old >= 0:
            customer_pid.append(old_pids[old])
            merged = sorted(old_pids[o] for o in absorbed.get(part, []))
            others.append(merged)
            if merged:
                kind.append(MERGED)
            elif sizes[part] == old_sizes[old] == same[part]:
                kind.append(UNCHANGED)
            else:
                kind.append(UPDATED)
        else:
            customer_pid.append(next(fresh))
            split_from = int(old_customer[first_contact[part]])
            others.append([old_pids[split_from]] if split_from >= 0 else [])
            kind.append(SPLIT if split_from >= 0 else CREATED)

    by_rank = np.argsort(contact_rank, kind="stable")
    members_offsets, members = _grouped(part_of[by_rank], by_rank, parts)
    added_mask = ~in_survivor[by_rank]
    added_offsets, added = _grouped(part_of[by_rank][added_mask], by_rank[added_mask], parts)
    # Removed from a part: former contacts of its survivor that are now elsewhere.
    survivor_part = np.full(old_count, -1, np.int64)
    survivor_part[survivor[survivor >= 0]] = np.flatnonzero(survivor >= 0)
    home = np.full(n, -1, np.int64)
    known = old_customer >= 0
    home[known] = survivor_part[old_customer[known]]
    left = (home >= 0) & (home != part_of)
    left_sorted = left[by_rank]
    removed_offsets, removed = _grouped(home[by_rank][left_sorted], by_rank[left_sorted], parts)
    return Assignment(
        part_of=part_of,
        members_offsets=members_offsets,
        members=members,
        customer_pid=customer_pid,
        kind=kind,
        others=others,
        added_offsets=added_offsets,
        added=added,
        removed_offsets=removed_offsets,
        removed=removed,
    )
