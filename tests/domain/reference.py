"""An independent reference model of the linking rules (SPEC 3, 3.8).

This module is the oracle the engine is checked against. It shares no code
with ``idlink.domain.linking`` or ``idlink.domain.pids``: it is written
from the text of the rules, as directly as possible, and it is slow on
purpose. Nothing in it is incremental:

- records are applied in canonical order ``(observed_at, source, record_id)``
  from nothing, every time the model is run;
- a customer is recomputed from scratch whenever the step needs one, as the
  connected contacts of the record groups applied so far (no union-find);
- a contact is named by ``(type, source, cleaned value)``, never by a hash,
  so nothing here can depend on an account secret.

The only idlink code it may use is the public clean-up and validation of
contacts (:func:`clean`), which decides what a raw value means; the rules
themselves are all here.

The step, for a record R with canonical key k (the rules, SPEC 3.3, 3.4, 3.8):

1. usable(R): contacts of R that are valid, not blocked, not do-not-link.
   Every two of them become connected; connections(c) is the number of
   distinct other contacts c shares a record with (isolated ones included).
2. linkable(R): usable and not isolated, sorted non-reassignable first, then
   by the contact order rank(c) = (priority, first_key, position).
3. Each next contact n joins the customer A of the first live member of the
   record's group; across a key limit a reassignable n moves once, otherwise
   CONFLICT; over the cap the most connected contact of A | B (ties: last in
   the contact order) is isolated if allowed, otherwise CAPPED.
4. The group is R's applied evidence; customers are the connected contacts of
   the groups, without isolated contacts and without a moved device in groups
   older than its move.

:func:`check_pids` states the customer PID rules (SPEC 3.4, 3.5 and the
rules' "heir") as a check of one operation's before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations

from idlink.domain.contacts import ContactKey, prepare_contact
from idlink.domain.keytypes import AccountConfig

APPLIED = 1
CAPPED = 2
CONFLICT = 3
OUTCOME_NAMES = {APPLIED: "APPLIED", CAPPED: "CAPPED", CONFLICT: "CONFLICT"}
_NO_SECRET = bytes(32)

# Priority 0 means the type's default (rules: id 10, email 20, phone 30, device
# 40, any type an admin adds 50).
DEFAULT_PRIORITIES = {"id": 10, "email": 20, "phone": 30, "device": 40}
ADDED_TYPE_PRIORITY = 50

Contact = tuple[str, str, str]  # (key type, source or "" when not source-scoped, cleaned value)
Key = tuple[int, str, str]  # a record's canonical key: (observed_at, source, record_id)


@dataclass(frozen=True)
class TypeRule:
    """What the rules need to know about one key type."""

    name: str
    max_per_customer: int = 0
    reassignable: bool = False
    priority: int = 0

    @property
    def rank(self) -> int:
        if self.priority:
            return self.priority
        return DEFAULT_PRIORITIES.get(self.name, ADDED_TYPE_PRIORITY)


@dataclass(frozen=True)
class Rec:
    """One record: its contacts already cleaned, in the order they were sent."""

    source: str
    record_id: str
    observed_at: int
    contacts: tuple[Contact, ...]

    @property
    def key(self) -> Key:
        return (self.observed_at, self.source, self.record_id)


@dataclass
class Model:
    """Everything the rules decide for one set of records."""

    partition: set[frozenset[Contact]]
    outcomes: dict[tuple[str, str], int]
    # Isolated contacts: the connection count they had when they were isolated.
    isolated: dict[Contact, int]
    isolated_at: dict[Contact, Key]
    connections: dict[Contact, int]
    # Moved devices: the canonical key of the record that moved them last.
    moved: dict[Contact, Key]
    groups: dict[Key, frozenset[Contact]]
    # (first_key, position) of every contact named by a record.
    seen: dict[Contact, tuple[Key, int]]

    def customer_of(self, contact: Contact) -> frozenset[Contact]:
        for part in self.partition:
            if contact in part:
                return part
        raise KeyError(contact)


@dataclass
class _State:
    rules: Mapping[str, TypeRule]
    unusable: frozenset[Contact]
    never_isolate: frozenset[Contact]
    max_contacts: int
    isolate_min_connections: int
    seen: dict[Contact, tuple[Key, int]] = field(default_factory=dict)
    neighbours: dict[Contact, set[Contact]] = field(default_factory=dict)
    groups: list[tuple[Key, list[Contact]]] = field(default_factory=list)
    isolated: dict[Contact, tuple[Key, int]] = field(default_factory=dict)
    moved_at: dict[Contact, Key] = field(default_factory=dict)

    def rule(self, contact: Contact) -> TypeRule:
        return self.rules.get(contact[0]) or TypeRule(contact[0])

    def rank(self, contact: Contact) -> tuple[int, Key, int]:
        """The contact order: type priority, first record naming it, position there."""
        first_key, position = self.seen[contact]
        return (self.rule(contact).rank, first_key, position)

    def connections(self, contact: Contact) -> int:
        return len(self.neighbours.get(contact, ()))

    def counts_in(self, contact: Contact, group_key: Key) -> bool:
        """Whether a contact is part of a group's evidence now."""
        if contact in self.isolated:
            return False
        moved = self.moved_at.get(contact)
        return moved is None or group_key >= moved

    def customer(self, contact: Contact) -> frozenset[Contact]:
        """The contacts connected to ``contact`` through the groups, found from scratch."""
        if contact in self.isolated:
            return frozenset([contact])
        found = {contact}
        changed = True
        while changed:
            changed = False
            for group_key, group in self.groups:
                members = {m for m in group if self.counts_in(m, group_key)}
                if members & found and not members <= found:
                    found |= members
                    changed = True
        return frozenset(found)

    def breaks_a_key_limit(self, contacts: Iterable[Contact]) -> bool:
        counts: dict[str, int] = {}
        for c in contacts:
            counts[c[0]] = counts.get(c[0], 0) + 1
        for name, count in counts.items():
            limit = self.rules[name].max_per_customer if name in self.rules else 0
            if limit and count > limit:
                return True
        return False

    def step(self, record: Rec) -> int:
        """Apply one record; return its outcome."""
        k = record.key
        sent: list[Contact] = []
        for c in record.contacts:
            if c not in sent:
                sent.append(c)
        for position, c in enumerate(sent):
            if c not in self.seen:
                self.seen[c] = (k, position)

        # 1. usable contacts, all connected to each other
        usable = [c for c in sent if c not in self.unusable]
        for a, b in combinations(usable, 2):
            self.neighbours.setdefault(a, set()).add(b)
            self.neighbours.setdefault(b, set()).add(a)

        # 2. linkable contacts: non-reassignable first, then the contact order
        linkable = sorted(
            (c for c in usable if c not in self.isolated),
            key=lambda c: (self.rule(c).reassignable, self.rank(c)),
        )

        # 3. join them one by one; the group is registered first, so that a
        # customer computed in the middle of the record keeps what it joined
        group: list[Contact] = []
        self.groups.append((k, group))
        outcome = APPLIED
        for n in linkable:
            if n in self.isolated:  # this very record isolated it
                continue
            moved_here = False
            while True:
                live = [m for m in group if m not in self.isolated]
                if not live:
                    group[:] = [n]
                    break
                a = self.customer(live[0])
                b = self.customer(n)
                if a == b:
                    group.append(n)
                    break
                merged = a | b
                if self.breaks_a_key_limit(merged):
                    if self.rule(n).reassignable and not moved_here and len(b) > 1:
                        self.moved_at[n] = k
                        moved_here = True
                        continue
                    outcome = CONFLICT
                    break
                if len(merged) > self.max_contacts:
                    candidate = max(merged, key=lambda c: (self.connections(c), self.rank(c)))
                    count = self.connections(candidate)
                    if count >= self.isolate_min_connections and (
                        candidate not in self.never_isolate
                    ):
                        self.isolated[candidate] = (k, count)
                        if candidate == n:
                            break
                        continue
                    if outcome == APPLIED:
                        outcome = CAPPED
                    break
                group.append(n)
                break
        group[:] = [m for m in group if m not in self.isolated]
        return outcome


def run(
    records: Iterable[Rec],
    rules: Mapping[str, TypeRule],
    *,
    universe: Iterable[Contact] = (),
    unusable: Iterable[Contact] = (),
    never_isolate: Iterable[Contact] = (),
    max_contacts: int = 100,
    isolate_min_connections: int = 20,
) -> Model:
    """Apply every record in canonical order from nothing.

    ``unusable`` holds the contacts that may never link: invalid, blocked or
    do-not-link. ``universe`` adds contacts that no record names any more
    (each is a customer of its own).
    """
    state = _State(
        rules=rules,
        unusable=frozenset(unusable),
        never_isolate=frozenset(never_isolate),
        max_contacts=max_contacts,
        isolate_min_connections=isolate_min_connections,
    )
    ordered = sorted(records, key=lambda r: r.key)
    keys = [r.key for r in ordered]
    if len(set(keys)) != len(keys) or len({(r.source, r.record_id) for r in ordered}) != len(keys):
        raise ValueError("a record is named twice")
    outcomes = {(r.source, r.record_id): state.step(r) for r in ordered}

    everything = set(universe) | {c for r in ordered for c in r.contacts}
    partition: set[frozenset[Contact]] = set()
    placed: set[Contact] = set()
    for c in sorted(everything):
        if c not in placed:
            part = state.customer(c)
            partition.add(part)
            placed |= part
    return Model(
        partition=partition,
        outcomes=outcomes,
        isolated={c: count for c, (_, count) in state.isolated.items()},
        isolated_at={c: key for c, (key, _) in state.isolated.items()},
        connections={c: state.connections(c) for c in everything},
        moved=dict(state.moved_at),
        groups={key: frozenset(group) for key, group in state.groups},
        seen=dict(state.seen),
    )


# -- customer PIDs (SPEC 3.4, 3.5; rules: "heir") --------------------------------------


def earliest_seen(seen: Mapping[Contact, tuple[Key, int]], contact: Contact) -> tuple:
    """Sort key of "earliest-seen": (first_key, position); contacts no record names come last."""
    if contact in seen:
        return (0, seen[contact])
    return (1,)


def _earliest(contacts: Iterable[Contact], seen: Mapping[Contact, tuple[Key, int]]) -> set[Contact]:
    """The earliest-seen of ``contacts`` (several only when no record names any of them)."""
    contacts = list(contacts)
    best = min(earliest_seen(seen, c) for c in contacts)
    return {c for c in contacts if earliest_seen(seen, c) == best}


def check_pids(
    before: Mapping[bytes, frozenset[Contact]],
    after: Mapping[bytes, frozenset[Contact]],
    *,
    current_pid_of: Mapping[bytes, bytes],
    split_from: Mapping[bytes, bytes],
    created_at: Mapping[bytes, int],
    known_pids: set[bytes],
    seen: Mapping[Contact, tuple[Key, int]],
    reassignable: Callable[[Contact], bool],
) -> list[str]:
    """What is wrong with the customer PIDs one operation left (an empty list: nothing).

    ``before`` and ``after`` map customer PIDs to their contacts;
    ``current_pid_of`` says where each PID of ``before`` leads now (itself,
    or the survivor it redirects to); ``created_at`` says in which operation
    each PID of ``before`` was created (PIDs created in one operation have no
    order between them, so either may survive); ``known_pids`` holds every
    PID ever handed out before this operation; ``seen`` is (first_key,
    position) over the records after the operation. The rules:

    - an old customer's heir is the part holding its earliest-seen
      non-reassignable former contact; only a customer with no
      non-reassignable contact counts its reassignable ones;
    - a part heir to several keeps the oldest one's PID, the others lead to it;
    - a part heir to none gets a new PID, split from the old customer of its
      earliest-seen contact, non-reassignable contacts first as for heirs
      (none when that contact is new).

    The last rule is docs/design.md's reading of "its earliest-seen
    contact": a device that moved is not a part of the customer it left, and
    counting it would copy that customer's profile into another person's
    (MXO use case 6; docs/testing.md).
    """
    problems: list[str] = []
    part_of: dict[Contact, bytes] = {}
    for pid, contacts in after.items():
        for c in contacts:
            part_of[c] = pid
    old_customer_of: dict[Contact, bytes] = {}
    for pid, contacts in before.items():
        for c in contacts:
            old_customer_of[c] = pid

    heirs: dict[bytes, list[bytes]] = {pid: [] for pid in after}
    for old, contacts in before.items():
        fixed = [c for c in contacts if not reassignable(c)] or list(contacts)
        allowed = {part_of[c] for c in _earliest(fixed, seen)}
        leads_to = current_pid_of.get(old)
        if leads_to not in allowed:
            problems.append(
                f"the PID of {sorted(contacts)} should go to the part holding its earliest-seen "
                f"non-reassignable contact {sorted(_earliest(fixed, seen))}, "
                f"it went to {sorted(after.get(leads_to, ())) if leads_to else None}"
            )
            continue
        heirs[leads_to].append(old)

    for pid, contacts in after.items():
        inherited = heirs[pid]
        if inherited:
            oldest = min(created_at[p] for p in inherited)
            if pid not in inherited or created_at[pid] != oldest:
                problems.append(
                    f"{sorted(contacts)} is heir to {len(inherited)} customers and should keep "
                    f"the oldest one's PID"
                )
            continue
        if pid in known_pids:
            problems.append(f"{sorted(contacts)} is heir to no customer but kept an old PID")
            continue
        fixed = [c for c in contacts if not reassignable(c)] or list(contacts)
        expected = {old_customer_of.get(c, b"") for c in _earliest(fixed, seen)}
        if split_from.get(pid, b"") not in expected:
            problems.append(
                f"{sorted(contacts)} should record that it split from the old customer of "
                f"its earliest-seen contact"
            )
    return problems


def describe(model: Model) -> str:
    """A readable summary of a model, for assertion messages."""
    lines = [f"partition: {sorted(sorted(p) for p in model.partition)}"]
    lines.append(
        "outcomes: "
        + ", ".join(f"{s}/{r}={OUTCOME_NAMES[o]}" for (s, r), o in sorted(model.outcomes.items()))
    )
    lines.append(f"isolated: {sorted(model.isolated.items())}")
    lines.append(f"moved: {sorted(model.moved.items())}")
    return "\n".join(lines)


def clean(config: AccountConfig, key: ContactKey) -> tuple[Contact, bool]:
    """A raw contact as the rules see it: (type, source, cleaned value) and whether it is valid.

    Uses idlink's public clean-up and validation (SPEC 2.1, 2.2) and the key
    type's blocked values (2.4); the hash it also computes is thrown away.
    """
    prepared = prepare_contact(_NO_SECRET, config, key)
    return (prepared.key_type.name, prepared.source, prepared.cleaned), not prepared.invalid_reason


def type_rules(config: AccountConfig) -> dict[str, TypeRule]:
    """The linking side of an account's key types."""
    return {
        name: TypeRule(
            name,
            max_per_customer=kt.max_per_customer,
            reassignable=kt.reassignable,
            priority=getattr(kt, "priority", 0),
        )
        for name, kt in config.key_types.items()
    }
