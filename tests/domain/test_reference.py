"""The engine against an independent reference model of the linking rules (SPEC 3, 3.8).

The model (tests/domain/reference.py) applies the rules from their text, from
nothing, in canonical order. Hypothesis drives the real engine on small pools
of contacts (so that caps, key limits, hubs, device moves and do-not-link fire
often) and compares, after every operation: the partition as sets of (type,
source, cleaned value), every record's outcome, the isolated contacts with
their counts, the moved devices, the connection counts, and that customer PIDs
went where the rules say. Hand-written examples from the SPEC and the MXO use
cases check the model itself, and the engine beside it.

IDLINK_REFERENCE_EXAMPLES sets the number of examples per property (default 30).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import permutations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import (
    NORMALIZER_EMAIL,
    NORMALIZER_PHONE,
    NORMALIZER_TRIM,
    AccountConfig,
    AccountPolicy,
    KeyType,
    default_key_types,
)
from idlink.security.crypto import open_store
from idlink.store import codec
from tests.domain import reference
from tests.domain.conftest import MASTER
from tests.domain.reference import APPLIED, CAPPED, CONFLICT, Contact, Model

A = "acme"
EXAMPLES = int(os.environ.get("IDLINK_REFERENCE_EXAMPLES", "30"))
# Master secrets for the examples: each gives the contacts another PID order.
SECRETS = [hashlib.sha256(b"idlink reference secret %d" % i).digest() for i in range(10)]

# -- the small world the properties live in ------------------------------------------

POOL = [
    ContactKey("phone", "+1 415 555 0001"),
    ContactKey("phone", "+14155550001"),  # the same contact as the one above
    ContactKey("phone", "+14155550002"),
    ContactKey("phone", "+14155550003"),
    ContactKey("email", "Ann@x.com"),
    ContactKey("email", "ann@x.com"),  # the same contact as the one above
    ContactKey("email", "bob@x.com"),
    ContactKey("email", "cy@x.com"),
    ContactKey("email", "no@email.com"),
    ContactKey("email", "null"),  # invalid
    ContactKey("email", "unknown@x.com"),  # blocked
    ContactKey("id", "1", "crm"),
    ContactKey("id", "1", "desk"),  # another contact: ids are source-scoped
    ContactKey("id", "2", "crm"),
    ContactKey("device", "dev-1"),
    ContactKey("device", "dev-2"),
    ContactKey("device", "dev-3"),
    ContactKey("member", "M1"),
    ContactKey("member", "M2"),
    ContactKey("member", "M3"),
]
TYPES = ("phone", "email", "id", "device", "member")


def key_type(name: str, normalizer: int, *, priority: int = 0, **rules) -> KeyType:
    """A key type; the priority is passed only when it is not the type's default."""
    if priority:
        rules["priority"] = priority
    return KeyType(name, normalizer, **rules)


@dataclass(frozen=True)
class World:
    """Key types and account policy of one example."""

    limits: tuple[tuple[str, int], ...] = ()
    priorities: tuple[tuple[str, int], ...] = ()
    max_contacts: int = 4
    isolate_min_connections: int = 2

    def key_types(self) -> list[KeyType]:
        limit, priority = dict(self.limits), dict(self.priorities)
        defaults = default_key_types()
        return [
            key_type(
                "phone",
                NORMALIZER_PHONE,
                priority=priority.get("phone", 0),
                max_per_customer=limit.get("phone", 0),
                blocked_patterns=defaults["phone"].blocked_patterns,
            ),
            key_type(
                "email",
                NORMALIZER_EMAIL,
                priority=priority.get("email", 0),
                max_per_customer=limit.get("email", 0),
                blocked_values=("unknown@x.com",),
            ),
            key_type(
                "id",
                NORMALIZER_TRIM,
                priority=priority.get("id", 0),
                source_scoped=True,
                max_per_customer=limit.get("id", 0),
            ),
            key_type(
                "device",
                NORMALIZER_TRIM,
                priority=priority.get("device", 0),
                reassignable=True,
                anonymous=True,
                max_per_customer=limit.get("device", 0),
            ),
            key_type(
                "member",
                NORMALIZER_TRIM,
                priority=priority.get("member", 0),
                max_per_customer=limit.get("member", 1),
            ),
        ]

    def policy(self) -> AccountPolicy:
        return AccountPolicy(self.max_contacts, self.isolate_min_connections)


worlds = st.builds(
    World,
    limits=st.tuples(
        st.tuples(st.just("phone"), st.sampled_from([0, 0, 2])),
        st.tuples(st.just("email"), st.sampled_from([0, 0, 1, 2])),
        st.tuples(st.just("id"), st.sampled_from([0, 1])),
        st.tuples(st.just("device"), st.sampled_from([0, 0, 1])),
        st.tuples(st.just("member"), st.sampled_from([1, 1, 2])),
    ),
    # Ties between types (two types of one priority) fall through to the data.
    priorities=st.tuples(*(st.tuples(st.just(t), st.sampled_from([0, 0, 1, 2, 3])) for t in TYPES)),
    max_contacts=st.integers(3, 5),
    # 5 is more than most contacts reach here: the cap then refuses (CAPPED).
    isolate_min_connections=st.sampled_from([2, 3, 5]),
)

# Each contact of a record is a phone or an id, an email, a device or a member
# id, about a quarter each, so that devices and limited types meet often.
_KINDS = [
    [i for i, key in enumerate(POOL) if key.type in kinds]
    for kinds in (("phone", "id"), ("email",), ("device",), ("member",))
]
pool_contacts = st.one_of(*(st.sampled_from(kind) for kind in _KINDS))
contact_lists = st.lists(pool_contacts, min_size=1, max_size=5) | st.lists(
    pool_contacts, min_size=3, max_size=6
)
records = st.tuples(
    st.sampled_from(["crm", "desk"]),
    st.integers(0, 6),  # record id: collisions are replacements
    contact_lists,
    st.integers(0, 9),  # observed_at: ties and late arrivals
)
operations = st.lists(
    st.one_of(
        records.map(lambda r: ("upsert", r)),
        records.map(lambda r: ("upsert", r)),
        records.map(lambda r: ("upsert", r)),
        st.tuples(st.sampled_from(["crm", "desk"]), st.integers(0, 6)).map(lambda r: ("delete", r)),
        st.tuples(pool_contacts, st.booleans()).map(lambda r: ("dnl", r)),
        st.tuples(pool_contacts, st.booleans()).map(lambda r: ("never", r)),
    ),
    min_size=3,
    max_size=25,
)


def to_input(record: tuple) -> RecordInput:
    source, rid, members, observed = record
    return RecordInput(source, str(rid), [POOL[i] for i in members], observed)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # Mutation testing (tests/mutation/run.sh) wants the same examples for every
    # mutant, and no example database carried from one mutant to the next.
    **({"derandomize": True, "database": None} if os.environ.get("IDLINK_MUTATION") else {}),
)

# -- what the engine holds, in the model's terms ------------------------------------------


@dataclass
class Snapshot:
    customers: dict[bytes, frozenset[Contact]]
    split_from: dict[bytes, bytes]
    outcomes: dict[tuple[str, str], int]
    isolated: dict[Contact, int]
    moved: dict[Contact, tuple[int, str, str]]
    connections: dict[Contact, int]

    @property
    def partition(self) -> set[frozenset[Contact]]:
        return set(self.customers.values())


def snapshot(engine: IdentityEngine, account: str = A) -> Snapshot:
    """The engine's customers, records and contact state, named by (type, source, value)."""
    with engine.read(account) as view:
        txn = view.txn
        stored = dict(txn.iter_contacts())
        name = {pid: (c.type, c.source, c.value) for pid, c in stored.items()}
        customers, split_from = {}, {}
        for pid, state in txn.iter_customers():
            customers[pid] = frozenset(name[p] for p in state.contact_pids)
            split_from[pid] = state.split_from
        return Snapshot(
            customers=customers,
            split_from=split_from,
            outcomes={(r.source, r.record_id): r.outcome for r in txn.iter_records()},
            isolated={name[p]: c.isolated_connections for p, c in stored.items() if c.isolated},
            moved={
                name[p]: codec.split_canonical_key(c.moved_at)
                for p, c in stored.items()
                if c.moved_at
            },
            connections={name[p]: c.connections for p, c in stored.items()},
        )


def differences(engine: Snapshot, model: Model) -> list[str]:
    """Where the engine and the model disagree (empty when they agree)."""
    found = []
    if engine.partition != model.partition:
        only_engine = sorted(sorted(p) for p in engine.partition - model.partition)
        only_model = sorted(sorted(p) for p in model.partition - engine.partition)
        found.append(f"partition: engine has {only_engine}, the model {only_model}")
    for record in sorted(set(engine.outcomes) | set(model.outcomes)):
        got, want = engine.outcomes.get(record), model.outcomes.get(record)
        if got != want:
            found.append(f"outcome of {record}: engine {got}, model {want}")
    if engine.isolated != model.isolated:
        found.append(f"isolated: engine {engine.isolated}, model {model.isolated}")
    if engine.moved != model.moved:
        found.append(f"moved: engine {engine.moved}, model {model.moved}")
    wrong = {
        c: (engine.connections.get(c), n)
        for c, n in model.connections.items()
        if engine.connections.get(c) != n
    }
    if wrong:
        found.append(f"connections (engine, model): {wrong}")
    return found


def model_for(
    config: AccountConfig,
    records: Iterable[RecordInput],
    *,
    universe: Iterable[Contact] = (),
    do_not_link: Iterable[Contact] = (),
    never_isolate: Iterable[Contact] = (),
    priorities: dict[str, int] | None = None,
) -> Model:
    """Run the model on records as the engine is sent them."""
    recs, invalid = [], set()
    for record in records:
        contacts = []
        for key in record.contacts:
            contact, valid = reference.clean(config, key)
            contacts.append(contact)
            if not valid:
                invalid.add(contact)
        recs.append(
            reference.Rec(record.source, record.record_id, record.observed_at_us, tuple(contacts))
        )
    rules = reference.type_rules(config)
    for name, priority in (priorities or {}).items():
        rules[name] = replace(rules[name], priority=priority)
    return reference.run(
        recs,
        rules,
        universe=universe,
        unusable=invalid | set(do_not_link),
        never_isolate=never_isolate,
        max_contacts=config.policy.max_contacts,
        isolate_min_connections=config.policy.isolate_min_connections,
    )


@dataclass
class Harness:
    """One engine, the operations sent to it, and the model of the same inputs."""

    engine: IdentityEngine
    config: AccountConfig
    records: dict[tuple[str, str], RecordInput] = field(default_factory=dict)
    universe: set[Contact] = field(default_factory=set)
    do_not_link: set[Contact] = field(default_factory=set)
    never_isolate: set[Contact] = field(default_factory=set)
    created_at: dict[bytes, int] = field(default_factory=dict)
    known_pids: set[bytes] = field(default_factory=set)
    operations: int = 0

    def contact(self, key: ContactKey) -> tuple[Contact, bool]:
        return reference.clean(self.config, key)

    def model(self) -> Model:
        return model_for(
            self.config,
            self.records.values(),
            universe=self.universe,
            do_not_link=self.do_not_link,
            never_isolate=self.never_isolate,
        )

    def note(self, record: RecordInput) -> None:
        key = (record.source, record.record_id)
        if record.deleted:
            self.records.pop(key, None)
            return
        self.records[key] = record
        self.universe.update(self.contact(k)[0] for k in record.contacts)

    def note_batch(self, batch: Sequence[RecordInput]) -> None:
        """A batch: a record named twice counts once, as its last version."""
        last = {(r.source, r.record_id): r for r in batch}
        for record in last.values():
            self.note(record)

    def apply(self, op: tuple) -> int | None:
        """Send one operation to the engine; the outcome of a record sent."""
        kind, args = op
        if kind == "upsert":
            record = to_input(args)
            self.note(record)
            return self.engine.link(A, record).outcome
        if kind == "delete":
            record = RecordInput(args[0], str(args[1]), [], 0, deleted=True)
            self.note(record)
            self.engine.ingest(A, [record])
            return None
        key, on = POOL[args[0]], args[1]
        contact = self.contact(key)[0]
        marks = self.do_not_link if kind == "dnl" else self.never_isolate
        (marks.add if on else marks.discard)(contact)
        if kind == "dnl":
            self.engine.set_contact_policy(A, key, do_not_link=on)
        else:
            self.engine.set_contact_policy(A, key, never_isolate=on)
        return None

    def reassignable(self, contact: Contact) -> bool:
        kt = self.config.key_types.get(contact[0])
        return kt is not None and kt.reassignable

    def pid_problems(self, before: Snapshot, after: Snapshot, model: Model) -> list[str]:
        """Check the customer PIDs of one operation against the rules."""
        current = {pid: self.engine.get_customer(A, pid).pid for pid in before.customers}
        self.operations += 1
        for pid in after.customers:
            self.created_at.setdefault(pid, self.operations)
        problems = reference.check_pids(
            before.customers,
            after.customers,
            current_pid_of=current,
            split_from=after.split_from,
            created_at=self.created_at,
            known_pids=self.known_pids,
            seen=model.seen,
            reassignable=self.reassignable,
        )
        self.known_pids.update(after.customers)
        return problems


@contextmanager
def harness(world: World, master: bytes = MASTER) -> Iterator[Harness]:
    with (
        tempfile.TemporaryDirectory(prefix="idlink-ref-") as folder,
        open_store(folder, durable=False) as store,
    ):
        engine = IdentityEngine(store, master)
        engine.set_account_policy(A, world.policy())
        for kt in world.key_types():
            engine.put_key_type(A, kt)
        yield Harness(engine, engine.account_config(A))


def assert_agree(h: Harness, context: str = "") -> Model:
    model = h.model()
    problems = differences(snapshot(h.engine), model)
    assert not problems, f"{context}\n" + "\n".join(problems) + "\n" + reference.describe(model)
    # What the example exercised (pytest --hypothesis-show-statistics).
    for outcome in set(model.outcomes.values()):
        event(f"a record {reference.OUTCOME_NAMES[outcome]}")
    if model.isolated:
        event("a contact isolated")
    if model.moved:
        event("a device moved")
    if h.do_not_link & set(model.connections):
        event("a do-not-link contact")
    return model


# -- properties ---------------------------------------------------------------------------


@SETTINGS
@given(world=worlds, ops=operations)
def test_engine_follows_the_rules_after_every_operation(impl, world, ops):
    with harness(world) as h:
        before = snapshot(h.engine)
        for i, op in enumerate(ops):
            outcome = h.apply(op)
            model = assert_agree(h, f"after operation {i}: {op}")
            if outcome is not None:
                key = (op[1][0], str(op[1][1]))
                assert outcome == model.outcomes[key], (op, reference.describe(model))
            after = snapshot(h.engine)
            problems = h.pid_problems(before, after, model)
            assert not problems, f"after operation {i}: {op}\n" + "\n".join(problems)
            before = after


@SETTINGS
@given(world=worlds, recs=st.lists(records, min_size=3, max_size=20), data=st.data())
def test_engine_follows_the_rules_in_any_arrival_order_and_in_batches(impl, world, recs, data):
    inputs = [to_input(r) for r in recs]
    order = data.draw(st.permutations(inputs), label="arrival order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(inputs) - 1))), label="cuts"))
    with harness(world) as one_by_one, harness(world) as batched, harness(world) as in_batches:
        for record in order:
            one_by_one.note(record)
            one_by_one.engine.link(A, record)
        assert_agree(one_by_one, "records one by one")

        batched.note_batch(inputs)
        results = batched.engine.ingest(A, inputs)
        model = assert_agree(batched, "one batch")
        # Ingest answers every record sent, a record named twice with its last version's outcome.
        for record, result in zip(inputs, results, strict=True):
            assert result.outcome == model.outcomes[(record.source, record.record_id)]

        start = 0
        for end in [*cuts, len(inputs)]:
            batch = inputs[start:end]
            start = end
            if not batch:
                continue
            before = snapshot(in_batches.engine)
            in_batches.note_batch(batch)
            in_batches.engine.ingest(A, batch)
            step = assert_agree(in_batches, f"batch ending at {end}")
            problems = in_batches.pid_problems(before, snapshot(in_batches.engine), step)
            assert not problems, f"batch ending at {end}\n" + "\n".join(problems)


# -- hand-written examples: the model itself, and the engine beside it ------------------------


def phone(v: str) -> ContactKey:
    return ContactKey("phone", v)


def email(v: str) -> ContactKey:
    return ContactKey("email", v)


def device(v: str) -> ContactKey:
    return ContactKey("device", v)


def c(key: ContactKey) -> Contact:
    """The model's name for a contact of the default key types."""
    return reference.clean(AccountConfig(A, 0, key_types=EXAMPLE_TYPES), key)[0]


EXAMPLE_TYPES = {
    **default_key_types(),
    "customer_key": KeyType("customer_key", NORMALIZER_TRIM, max_per_customer=1),
    "crm_id": KeyType("crm_id", NORMALIZER_TRIM, max_per_customer=1),
    "member": KeyType("member", NORMALIZER_TRIM, max_per_customer=1),
}


def model_of(
    recs: list[RecordInput],
    *,
    key_types: dict[str, KeyType] | None = None,
    policy: AccountPolicy | None = None,
    never_isolate: tuple[ContactKey, ...] = (),
    priorities: dict[str, int] | None = None,
) -> Model:
    config = AccountConfig(
        A, 0, key_types=key_types or dict(EXAMPLE_TYPES), policy=policy or AccountPolicy()
    )
    return model_for(
        config,
        recs,
        never_isolate=[reference.clean(config, k)[0] for k in never_isolate],
        priorities=priorities,
    )


def rec(rid: str, *contacts: ContactKey, at: int, source: str = "crm") -> RecordInput:
    return RecordInput(source, rid, list(contacts), at)


def engine_with(engine: IdentityEngine, *types: KeyType, policy: AccountPolicy | None = None):
    if policy is not None:
        engine.set_account_policy(A, policy)
    for kt in types:
        engine.put_key_type(A, kt)
    return engine


def engine_partition(engine: IdentityEngine) -> set[frozenset[Contact]]:
    return snapshot(engine).partition


PLACEHOLDER_ROWS = [
    rec(f"r{i}", phone(f"+1415555{i:04d}"), email("no@email.com"), at=i) for i in range(200)
]


def test_model_placeholder_email_is_isolated_not_merged():
    """SPEC 3.3's 2,000-row example at 200 rows: one customer per phone, the email isolated."""
    model = model_of(PLACEHOLDER_ROWS)
    placeholder = c(email("no@email.com"))
    assert model.partition == {frozenset([contact]) for contact in model.connections}
    assert len(model.partition) == 201
    # It was isolated by the record that would have made a customer of 101
    # contacts, when it had 100 connections; it goes on collecting connections.
    assert model.isolated == {placeholder: 100}
    assert model.isolated_at[placeholder] == (99, "crm", "r99")
    assert model.connections[placeholder] == 200
    assert set(model.outcomes.values()) == {APPLIED}


USE_CASE_6 = [
    rec(
        "login-1",
        device("tablet-1"),
        ContactKey("customer_key", "123"),
        email("first@home.example"),
        at=1,
        source="web",
    ),
    rec("login-2", device("tablet-1"), ContactKey("customer_key", "456"), at=2, source="web"),
    rec("login-3", device("tablet-1"), ContactKey("customer_key", "123"), at=3, source="web"),
]
TABLET, K123, K456, FIRST = (
    c(device("tablet-1")),
    c(ContactKey("customer_key", "123")),
    c(ContactKey("customer_key", "456")),
    c(email("first@home.example")),
)


def test_model_mxo_use_case_6_the_tablet_moves_and_the_pid_stays_with_the_person():
    after_two = model_of(USE_CASE_6[:2])
    assert after_two.partition == {frozenset([K123, FIRST]), frozenset([K456, TABLET])}
    assert after_two.moved == {TABLET: (2, "web", "login-2")}
    assert after_two.outcomes[("web", "login-2")] == APPLIED
    # The heir of {tablet, 123, email} is the part of 123, never the tablet's;
    # 456's customer is a new one, not split from 123's (it copies no profile).
    before = {b"P": frozenset([TABLET, K123, FIRST])}
    after = {b"P": frozenset([K123, FIRST]), b"Q": frozenset([K456, TABLET])}
    assert not reference.check_pids(
        before,
        after,
        current_pid_of={b"P": b"P"},
        split_from={b"Q": b""},
        created_at={b"P": 1},
        known_pids={b"P"},
        seen=after_two.seen,
        reassignable=lambda contact: contact[0] == "device",
    )
    wrong = {b"P": frozenset([K456, TABLET]), b"Q": frozenset([K123, FIRST])}
    assert reference.check_pids(
        before,
        wrong,
        current_pid_of={b"P": b"P"},
        split_from={b"Q": b"P"},
        created_at={b"P": 1},
        known_pids={b"P"},
        seen=after_two.seen,
        reassignable=lambda contact: contact[0] == "device",
    )

    after_three = model_of(USE_CASE_6)
    assert after_three.partition == {frozenset([K123, FIRST, TABLET]), frozenset([K456])}
    assert after_three.moved == {TABLET: (3, "web", "login-3")}


def test_engine_mxo_use_case_6_a_customer_pid_never_follows_a_shared_device(engine):
    engine_with(engine, EXAMPLE_TYPES["customer_key"])
    engine.link(A, USE_CASE_6[0])
    p = engine.resolve(A, ContactKey("customer_key", "123")).customer.pid
    engine.link(A, USE_CASE_6[1])
    got = snapshot(engine)
    assert got.customers[p] == frozenset([K123, FIRST])
    q = engine.resolve(A, ContactKey("customer_key", "456")).customer.pid
    assert q != p and got.customers[q] == frozenset([K456, TABLET])
    assert got.split_from[q] == b""  # a new customer: it copies nothing of 123's
    engine.link(A, USE_CASE_6[2])
    got = snapshot(engine)
    assert got.customers[p] == frozenset([K123, FIRST, TABLET])
    assert engine.get_customer(A, q).pid == q
    assert {contact.value for contact in engine.get_customer(A, q).contacts} == {"456"}


USE_CASE_9_BEFORE = [
    rec("a", email("emma@er.com"), ContactKey("crm_id", "C-1"), at=1),
    rec("b", phone("+447700900123"), at=2),
]
USE_CASE_9_LINK = [email("emma@er.com"), phone("+447700900123"), ContactKey("crm_id", "C-2")]
EMMA, C1, C2, EMMA_PHONE = (
    c(email("emma@er.com")),
    c(ContactKey("crm_id", "C-1")),
    c(ContactKey("crm_id", "C-2")),
    c(phone("+447700900123")),
)


@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_model_mxo_use_case_9_a_conflict_refuses_only_the_link_that_breaks_the_limit(order):
    link = rec("c", *[USE_CASE_9_LINK[i] for i in order], at=3)
    model = model_of([*USE_CASE_9_BEFORE, link])
    assert model.partition == {frozenset([EMMA, C1, EMMA_PHONE]), frozenset([C2])}
    assert model.outcomes[("crm", "c")] == CONFLICT


@pytest.mark.parametrize("order", list(permutations(range(3))))
@pytest.mark.parametrize("master", SECRETS, ids=range(len(SECRETS)))
def test_engine_mxo_use_case_9_under_every_secret_and_order(impl, order, master):
    link = rec("c", *[USE_CASE_9_LINK[i] for i in order], at=3)
    with harness(World(), master) as h:
        engine_with(h.engine, EXAMPLE_TYPES["crm_id"])
        h.config = h.engine.account_config(A)
        for record in USE_CASE_9_BEFORE:
            h.engine.link(A, record)
        result = h.engine.link(A, link)
        assert result.outcome == CONFLICT
        assert engine_partition(h.engine) >= {
            frozenset([EMMA, C1, EMMA_PHONE]),
            frozenset([C2]),
        }


# The cap's tie-break: e1, e2, p1 and p3 all have two connections when r5
# would make a customer of six; the one that comes last in the contact order
# (phones after emails, then the later first record) is isolated: p3.
TIE_BREAK = [
    rec("r1", email("e1@x.com"), phone("+14155550001"), at=1),
    rec("r2", email("e1@x.com"), phone("+14155550002"), at=2),
    rec("r3", email("e2@x.com"), phone("+14155550003"), at=3),
    rec("r4", email("e2@x.com"), phone("+14155550004"), at=4),
    rec("r5", phone("+14155550001"), phone("+14155550003"), at=5),
]
TIE_POLICY = AccountPolicy(max_contacts=3, isolate_min_connections=2)


def test_model_isolation_ties_go_to_the_last_contact_in_the_contact_order():
    model = model_of(TIE_BREAK, policy=TIE_POLICY)
    p = [c(phone(f"+1415555000{i}")) for i in range(5)]
    e1, e2 = c(email("e1@x.com")), c(email("e2@x.com"))
    assert model.isolated == {p[3]: 2}
    assert model.partition == {
        frozenset([e1, p[1], p[2]]),
        frozenset([e2, p[4]]),
        frozenset([p[3]]),
    }
    assert model.outcomes[("crm", "r5")] == APPLIED


@pytest.mark.parametrize("master", SECRETS, ids=range(len(SECRETS)))
def test_engine_isolation_ties_go_to_the_last_contact_in_the_contact_order(impl, master):
    expected = model_of(TIE_BREAK, policy=TIE_POLICY)
    with harness(World(), master) as h:
        engine_with(h.engine, policy=TIE_POLICY)
        for record in TIE_BREAK:
            h.engine.link(A, record)
        got = snapshot(h.engine)
    assert got.isolated == expected.isolated
    assert got.partition == expected.partition


def test_model_priority_decides_which_side_of_a_conflict_a_new_contact_joins():
    """The first contact in the contact order anchors the record; an admin's priority decides it."""
    recs = [
        rec("1", email("e1@x.com"), ContactKey("member", "M1"), at=1),
        rec("2", phone("+14155550001"), ContactKey("member", "M2"), at=2),
        rec("3", phone("+14155550001"), email("e1@x.com"), ContactKey("id", "9", "crm"), at=3),
    ]
    e1, p1, new = c(email("e1@x.com")), c(phone("+14155550001")), c(ContactKey("id", "9", "crm"))
    m1, m2 = c(ContactKey("member", "M1")), c(ContactKey("member", "M2"))
    by_default = model_of(recs)
    # id (10) anchors, email (20) joins it, phone (30) would bring a second member.
    assert by_default.partition == {frozenset([e1, m1, new]), frozenset([p1, m2])}
    assert by_default.outcomes[("crm", "3")] == CONFLICT
    phone_first = model_of(recs, priorities={"phone": 1})
    assert phone_first.partition == {frozenset([p1, m2, new]), frozenset([e1, m1])}
    assert phone_first.outcomes[("crm", "3")] == CONFLICT


def test_model_non_reassignable_contacts_come_first_in_a_record():
    """Without that rule the device (priority 40) would anchor and the member be refused."""
    recs = [
        rec("1", ContactKey("member", "M1"), device("d"), at=1),
        rec("2", device("d"), ContactKey("member", "M2"), at=2),
    ]
    m1, m2, d = c(ContactKey("member", "M1")), c(ContactKey("member", "M2")), c(device("d"))
    model = model_of(recs)
    assert model.partition == {frozenset([m1]), frozenset([m2, d])}
    assert model.moved == {d: (2, "crm", "2")}
    assert model.outcomes[("crm", "2")] == APPLIED


def test_model_a_moved_device_that_cannot_join_stays_alone():
    """A device moves once per record; if the other side still breaks a limit, CONFLICT."""
    types = dict(EXAMPLE_TYPES)
    types["device"] = KeyType("device", NORMALIZER_TRIM, reassignable=True, max_per_customer=1)
    recs = [
        rec("1", ContactKey("member", "M1"), device("d1"), at=1),
        rec("2", ContactKey("member", "M2"), device("d2"), at=2),
        rec("3", ContactKey("member", "M2"), device("d1"), at=3),
    ]
    m1, m2 = c(ContactKey("member", "M1")), c(ContactKey("member", "M2"))
    d1, d2 = c(device("d1")), c(device("d2"))
    model = model_of(recs, key_types=types)
    assert model.partition == {frozenset([m1]), frozenset([m2, d2]), frozenset([d1])}
    assert model.moved == {d1: (3, "crm", "3")}
    assert model.outcomes[("crm", "3")] == CONFLICT


def test_model_never_isolate_makes_the_cap_refuse():
    recs = [rec(f"r{i}", email("hub@x.com"), phone(f"+1415555000{i}"), at=i) for i in range(4)]
    policy = AccountPolicy(max_contacts=3, isolate_min_connections=2)
    model = model_of(recs, policy=policy, never_isolate=(email("hub@x.com"),))
    assert model.isolated == {}
    assert len(model.customer_of(c(email("hub@x.com")))) == 3
    assert [model.outcomes[("crm", f"r{i}")] for i in range(4)] == [
        APPLIED,
        APPLIED,
        CAPPED,
        CAPPED,
    ]


# -- examples mutation testing asked for (docs/testing.md) --------------------------------

LATE_BETWEEN = [
    rec("1", ContactKey("member", "M1"), device("d"), at=1),
    rec("5", ContactKey("member", "M1"), device("d"), at=5),  # changes no customer
    rec("3", ContactKey("member", "M2"), device("d"), at=3),  # arrives last
]


def test_model_a_late_record_between_two_records_of_a_customer_takes_its_place():
    model = model_of(LATE_BETWEEN)
    m1, m2, d = c(ContactKey("member", "M1")), c(ContactKey("member", "M2")), c(device("d"))
    # d moves to M2 at 3 and back to M1 at 5: M1's record is the newest.
    assert model.partition == {frozenset([m1, d]), frozenset([m2])}
    assert model.moved == {d: (5, "crm", "5")}


def test_engine_a_late_record_between_two_records_of_a_customer_takes_its_place(engine):
    """A record that changes no customer still moves its watermark (SPEC 3.2)."""
    engine_with(engine, EXAMPLE_TYPES["member"])
    for record in LATE_BETWEEN:
        engine.link(A, record)
    got, want = snapshot(engine), model_of(LATE_BETWEEN)
    assert got.partition == want.partition
    assert got.moved == want.moved


def test_engine_lists_a_customers_contacts_in_contact_order_after_a_late_record(engine):
    """A late record that names b@ first puts it first, though the customer does not change."""
    engine.link(A, rec("5", email("a@x.com"), email("b@x.com"), at=5))
    customer = engine.resolve(A, email("a@x.com")).customer
    assert [contact.value for contact in customer.contacts] == ["a@x.com", "b@x.com"]
    engine.link(A, rec("1", email("b@x.com"), email("a@x.com"), at=1))
    customer = engine.get_customer(A, customer.pid)
    assert [contact.value for contact in customer.contacts] == ["b@x.com", "a@x.com"]
