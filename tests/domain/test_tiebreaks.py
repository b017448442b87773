"""SPEC 3.8: every tie is broken by the data, never by a contact PID.

Contact PIDs are keyed hashes of the account secret, so their order changes
with the secret. The same records under different master secrets must give
the same customers (compared as sets of (type, source, cleaned value)), the
same outcome per record, the same isolated contacts and device moves, the
same contact order inside a customer, and the same part keeping each
customer PID. The examples are Medallia MXO use cases 6 and 9, an isolation
tie, a shared device and key-type priority.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, LinkResult, RecordInput
from idlink.domain.keytypes import (
    NORMALIZER_EMAIL,
    NORMALIZER_TRIM,
    AccountPolicy,
    KeyType,
    default_key_types,
)
from idlink.domain.linking import APPLIED, CONFLICT
from idlink.domain.profiles import STRING, ProfileUpdate, update_customer
from idlink.domain.views import FOUND, NOT_LINKABLE
from idlink.errors import InvalidArgument
from tests.domain.conftest import SECRETS

A = "acme"
Described = tuple[str, str, str]  # (type, source, cleaned value): the same under any secret
MakeEngine = Callable[[bytes], IdentityEngine]


def email(v: str) -> ContactKey:
    return ContactKey("email", v)


def phone(v: str) -> ContactKey:
    return ContactKey("phone", v)


def device(v: str) -> ContactKey:
    return ContactKey("device", v)


def crm_id(v: str) -> ContactKey:
    return ContactKey("crm_id", v)


def customer_key(v: str) -> ContactKey:
    return ContactKey("customer_key", v)


def rec(rid: str, *contacts: ContactKey, at: int, source: str = "crm") -> RecordInput:
    return RecordInput(source, rid, list(contacts), at)


def customer_of(engine: IdentityEngine, key: ContactKey, account: str = A) -> bytes:
    answer = engine.resolve(account, key)
    assert answer.customer is not None, answer
    return answer.customer.pid


def values(engine: IdentityEngine, customer_pid: bytes, account: str = A) -> list[str]:
    return [c.value for c in engine.get_customer(account, customer_pid).contacts]


# -- what an outside observer can compare across secrets -----------------------------------


@dataclass(frozen=True)
class Observed:
    """Everything about an account that must not depend on its secret."""

    customers: frozenset[tuple[Described, ...]]  # each customer's contacts, in its order
    records: frozenset[tuple[str, str, int, tuple[Described, ...]]]  # outcome, group
    isolated: frozenset[tuple[Described, int]]  # with the connection count shown
    moved: frozenset[tuple[Described, bytes]]  # device moves, with the moving record
    # Which part keeps each customer PID: (customer after, what that PID named before).
    lineage: frozenset[tuple[tuple[Described, ...], tuple[Described, ...] | None]]
    outcome: tuple[int, frozenset[frozenset[Described]]] | None  # of the last operation


def customers_by_pid(engine: IdentityEngine, account: str) -> dict[bytes, tuple[Described, ...]]:
    with engine.read(account) as view:
        return {
            pid: tuple((c.type, c.source, c.value) for c in view.customer(pid).contacts)
            for pid, _ in view.txn.iter_customers()
        }


def observe(
    engine: IdentityEngine,
    account: str,
    before: dict[bytes, tuple[Described, ...]],
    result: LinkResult | None,
) -> tuple[Observed, dict[bytes, tuple[Described, ...]]]:
    after = customers_by_pid(engine, account)
    with engine.read(account) as view:
        names = {pid: (c.type, c.source, c.value) for pid, c in view.txn.iter_contacts()}
        moved = frozenset(
            (names[pid], c.moved_at) for pid, c in view.txn.iter_contacts() if c.moved_at
        )
        records = frozenset(
            (r.source, r.record_id, r.outcome, tuple(names[p] for p in r.group_pids))
            for r in view.txn.iter_records()
        )
    isolated = frozenset(
        ((c.type, c.source, c.value), c.connections) for c in engine.list_isolated(account)
    )
    outcome = None
    if result is not None:
        outcome = (
            result.outcome,
            frozenset(frozenset(after[p]) for p in result.conflict_customer_pids if p in after),
        )
    observed = Observed(
        customers=frozenset(after.values()),
        records=records,
        isolated=isolated,
        moved=moved,
        lineage=frozenset((contacts, before.get(pid)) for pid, contacts in after.items()),
        outcome=outcome,
    )
    return observed, after


Operation = RecordInput | tuple


def run(engine: IdentityEngine, account: str, operations: Sequence[Operation]) -> list[Observed]:
    """Apply operations one by one; what could be observed after each."""
    seen: list[Observed] = []
    before: dict[bytes, tuple[Described, ...]] = {}
    for op in operations:
        result = None
        if isinstance(op, RecordInput):
            result = engine.link(account, op)
        elif op[0] == "delete":
            engine.delete_record(account, op[1], op[2])
        elif op[0] == "do_not_link":
            engine.set_contact_policy(account, op[1], do_not_link=op[2])
        elif op[0] == "key_type":
            engine.put_key_type(account, op[1])
        elif op[0] == "policy":
            engine.set_account_policy(account, op[1])
        else:  # pragma: no cover - a typo in a test
            raise AssertionError(op)
        observed, before = observe(engine, account, before, result)
        seen.append(observed)
    return seen


def assert_same_under_secrets(
    make_engine: MakeEngine, operations: Sequence[Operation], secrets: Sequence[bytes]
) -> list[Observed]:
    runs = [run(make_engine(secret), A, operations) for secret in secrets]
    for other in runs[1:]:
        for step, (expected, got) in enumerate(zip(runs[0], other, strict=True)):
            assert got == expected, f"operation {step} ({operations[step]!r}) differs"
    return runs[0]


# -- Medallia MXO use case 6: a shared device never takes a customer PID ----------------


CUSTOMER_KEY = KeyType("customer_key", NORMALIZER_TRIM, max_per_customer=1)


def test_mxo_use_case_6_the_customer_a_shared_tablet_leaves_keeps_its_pid(make_engine):
    for secret in SECRETS[:4]:
        engine = make_engine(secret)
        engine.put_key_type(A, CUSTOMER_KEY)
        first = engine.link(
            A,
            rec(
                "login-1",
                device("tablet-1"),
                customer_key("123"),
                email("first@home.example"),
                at=1,
                source="login",
            ),
        )
        p = first.customer_pid
        assert sorted(values(engine, p)) == ["123", "first@home.example", "tablet-1"]
        update_customer(
            engine,
            A,
            p,
            ProfileUpdate(set_attributes={"first_name": (STRING, "Ann")}, add_labels=["VIP"]),
        )

        second = engine.link(
            A, rec("login-2", device("tablet-1"), customer_key("456"), at=2, source="login")
        )
        assert second.outcome == APPLIED
        assert customer_of(engine, customer_key("123")) == p
        assert sorted(values(engine, p)) == ["123", "first@home.example"]
        q = customer_of(engine, customer_key("456"))
        assert q != p and customer_of(engine, device("tablet-1")) == q
        assert sorted(values(engine, q)) == ["456", "tablet-1"]
        # 456's customer is a new one, no part of 123's: it copies nothing of 123's profile.
        moved = engine.get_customer(A, q)
        assert moved.split_from == b""
        assert not moved.profile.attributes and not moved.profile.labels
        assert dict(engine.get_customer(A, p).profile.attributes)

        engine.link(
            A, rec("login-3", device("tablet-1"), customer_key("123"), at=3, source="login")
        )
        assert customer_of(engine, device("tablet-1")) == p
        assert sorted(values(engine, p)) == ["123", "first@home.example", "tablet-1"]
        again = engine.get_customer(A, q)
        assert again.pid == q and not again.redirected_from
        assert values(engine, q) == ["456"]


# -- Medallia MXO use case 9: a conflict refuses only the link that breaks the limit ----------


CRM_ID = KeyType("crm_id", NORMALIZER_TRIM, max_per_customer=1)
USE_CASE_9_CONTACTS = (email("emma@er.com"), phone("+447700900123"), crm_id("C-2"))


def use_case_9(engine: IdentityEngine, account: str, order: Sequence[ContactKey]) -> LinkResult:
    engine.put_key_type(account, CRM_ID)
    engine.link(account, rec("a", email("emma@er.com"), crm_id("C-1"), at=1))
    engine.link(account, rec("b", phone("+447700900123"), at=2))
    return engine.link(account, rec("c", *order, at=3))


def test_mxo_use_case_9_under_every_secret_and_every_order(make_engine):
    for secret in SECRETS:
        engine = make_engine(secret)
        for n, order in enumerate(itertools.permutations(USE_CASE_9_CONTACTS)):
            account = f"acct-{n}"  # each account has a secret of its own, too
            result = use_case_9(engine, account, order)
            assert result.outcome == CONFLICT, (secret.hex(), order)
            merged = customer_of(engine, email("emma@er.com"), account)
            assert sorted(values(engine, merged, account)) == [
                "+447700900123",
                "C-1",
                "emma@er.com",
            ]
            refused = engine.resolve(account, crm_id("C-2"))
            assert refused.status == FOUND
            assert [c.value for c in refused.customer.contacts] == ["C-2"]
            assert set(result.conflict_customer_pids) == {merged, refused.customer.pid}
            assert [(s.customer_pid, s.reason) for s in refused.suggestions] == [
                (merged, "REFUSED_LINK")
            ]


def test_key_type_priority_decides_who_anchors_a_record_and_is_previewed(make_engine):
    engine = make_engine(SECRETS[0])
    use_case_9(engine, A, USE_CASE_9_CONTACTS)
    merged = customer_of(engine, email("emma@er.com"))
    first_ids = KeyType("crm_id", NORMALIZER_TRIM, max_per_customer=1, priority=5)

    preview = engine.preview(A, key_type=first_ids)
    assert (preview.merges, preview.splits) == (1, 1)
    assert preview.split_examples == [merged]
    assert sorted(values(engine, merged)) == ["+447700900123", "C-1", "emma@er.com"]

    # CRM ids now come first: C-2 anchors the record, emma's side is the refused one.
    engine.put_key_type(A, first_ids)
    assert engine.account_config(A).key_types["crm_id"].priority == 5
    assert sorted(values(engine, customer_of(engine, email("emma@er.com")))) == [
        "C-1",
        "emma@er.com",
    ]
    assert sorted(values(engine, customer_of(engine, crm_id("C-2")))) == ["+447700900123", "C-2"]
    # Back to the default (0 = the default rank of an added type): use case 8 again.
    engine.put_key_type(A, CRM_ID)
    assert engine.account_config(A).key_types["crm_id"].priority == 50
    assert sorted(values(engine, customer_of(engine, email("emma@er.com")))) == [
        "+447700900123",
        "C-1",
        "emma@er.com",
    ]


def test_key_type_priority_defaults_and_validation():
    types = default_key_types()
    assert {name: t.priority for name, t in types.items()} == {
        "id": 10,
        "email": 20,
        "phone": 30,
        "device": 40,
    }
    assert KeyType("crm_id").priority == 50
    assert KeyType("email", NORMALIZER_EMAIL, priority=0) == types["email"]
    assert KeyType("email", NORMALIZER_EMAIL, priority=7).priority == 7
    with pytest.raises(InvalidArgument) as info:
        KeyType("crm_id", priority=1_000_001).validate()
    assert info.value.field == "key_type.priority"


# -- the cluster cap: isolation ties and the connection count ----------------------------------


def test_isolation_tie_isolates_the_last_contact_in_contact_order(make_engine):
    policy = AccountPolicy(max_contacts=3, isolate_min_connections=2)
    operations: list[Operation] = [
        ("policy", policy),
        rec("1", email("e1@x.com"), email("e2@x.com"), email("e3@x.com"), at=1),
        rec("2", email("e4@x.com"), email("e5@x.com"), email("e6@x.com"), at=2),
        # e3 and e4 both reach 3 connections: e4 was seen later, so it is the one isolated.
        rec("3", email("e3@x.com"), email("e4@x.com"), at=3),
    ]
    last = assert_same_under_secrets(make_engine, operations, SECRETS[:6])[-1]
    assert last.isolated == {(("email", "", "e4@x.com"), 3)}
    assert {tuple(v for _, _, v in c) for c in last.customers} == {
        ("e1@x.com", "e2@x.com", "e3@x.com"),
        ("e5@x.com", "e6@x.com"),
        ("e4@x.com",),
    }


def test_an_isolated_contact_reports_one_connection_count_everywhere(engine):
    engine.set_account_policy(A, AccountPolicy(max_contacts=5, isolate_min_connections=3))
    for i in range(20):
        engine.link(A, rec(f"r{i}", phone(f"+1415555{i:04d}"), email("no@email.com"), at=i))
    [listed] = engine.list_isolated(A)
    assert listed.value == "no@email.com" and listed.connections == 20
    answer = engine.resolve(A, email("no@email.com"))
    assert answer.status == NOT_LINKABLE
    assert answer.reason == "ISOLATED: 20 connections"
    assert engine.explain(A, email("no@email.com")).reasons == ["ISOLATED: 20 connections"]
    # A rebuild agrees: the count is over every applied record, not the count at isolation.
    engine.set_account_policy(A, AccountPolicy(max_contacts=6, isolate_min_connections=3))
    assert engine.resolve(A, email("no@email.com")).reason == "ISOLATED: 20 connections"


# -- order of contacts, first-seen keys ---------------------------------------------------------


def test_contacts_of_a_customer_are_in_contact_order(make_engine):
    operations: list[Operation] = [
        rec(
            "1",
            device("dev-1"),
            phone("+14155550001"),
            email("ann@x.com"),
            ContactKey("id", "C-9", "desk"),
            email("ann@y.com"),
            at=1,
        ),
    ]
    [observed] = assert_same_under_secrets(make_engine, operations, SECRETS[:3])
    [customer] = observed.customers
    # id before email before phone before device; within a type, as the record named them.
    assert [v for _, _, v in customer] == [
        "C-9",
        "ann@x.com",
        "ann@y.com",
        "+14155550001",
        "dev-1",
    ]


def test_deleting_a_contacts_first_record_moves_its_first_seen_key(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), email("a@x.com"), at=2))
    pid = customer_of(engine, email("a@x.com"))
    assert values(engine, pid) == ["a@x.com", "b@x.com"]
    engine.delete_record(A, "crm", "1")
    # Now first seen in record 2, where b comes first.
    assert values(engine, customer_of(engine, email("a@x.com"))) == ["b@x.com", "a@x.com"]
    engine.link(A, rec("0", email("a@x.com"), email("b@x.com"), at=0))  # a late record
    assert values(engine, customer_of(engine, email("a@x.com"))) == ["a@x.com", "b@x.com"]


# -- the same records under two secrets ------------------------------------------------------


def test_shared_devices_caps_and_limits_are_the_same_under_two_secrets(make_engine):
    member = KeyType("member", NORMALIZER_TRIM, max_per_customer=1)
    operations: list[Operation] = [
        ("policy", AccountPolicy(max_contacts=4, isolate_min_connections=2)),
        ("key_type", member),
        ("key_type", KeyType("email", NORMALIZER_EMAIL, max_per_customer=1)),
        # A tablet first seen with Ann, then used by Bob: it moves, Ann keeps her PID.
        rec("1", device("tablet"), email("ann@x.com"), at=1),
        rec("2", email("ann@x.com"), phone("+14155550001"), at=2),
        rec("3", device("tablet"), email("bob@x.com"), at=3),
        # Two members meet through one phone: the second member's link is refused.
        rec("4", ContactKey("member", "M1"), phone("+14155550002"), at=4),
        rec("5", ContactKey("member", "M2"), phone("+14155550002"), phone("+14155550003"), at=5),
        # A hub that fills a customer to the cap and past it.
        rec("6", phone("+14155550010"), phone("+14155550011"), phone("+14155550012"), at=6),
        rec("7", phone("+14155550012"), phone("+14155550013"), phone("+14155550014"), at=7),
        rec("8", phone("+14155550011"), phone("+14155550013"), at=8),
        # A late record, a replacement and a deletion replay their regions.
        rec("0", device("tablet"), email("bob@x.com"), phone("+14155550003"), at=0),
        rec("3", device("tablet"), email("bob@x.com"), phone("+14155550001"), at=3),
        ("delete", "crm", "1"),
        ("do_not_link", phone("+14155550002"), True),
        ("do_not_link", phone("+14155550002"), False),
        ("key_type", KeyType("member", NORMALIZER_TRIM, max_per_customer=1, priority=1)),
    ]
    steps = assert_same_under_secrets(make_engine, operations, SECRETS[:2])
    after_move = steps[5]
    assert after_move.outcome == (APPLIED, frozenset())
    assert (
        (("email", "", "ann@x.com"), ("phone", "", "+14155550001")),
        (("email", "", "ann@x.com"), ("phone", "", "+14155550001"), ("device", "", "tablet")),
    ) in after_move.lineage
    assert steps[7].outcome is not None and steps[7].outcome[0] == CONFLICT
    assert steps[10].isolated == {(("phone", "", "+14155550012"), 4)}


def test_isolated_contacts_are_listed_in_contact_order_and_paged(make_engine):
    lists = []
    for secret in SECRETS[:3]:
        engine = make_engine(secret)
        engine.set_account_policy(A, AccountPolicy(max_contacts=3, isolate_min_connections=2))
        n = 0
        # Sent hub by hub, but hub2's records are the oldest and the phone hub's
        # the very oldest: a phone still comes after every email.
        for hub, start in (
            (email("hub0@x.com"), 300),
            (email("hub1@x.com"), 200),
            (email("hub2@x.com"), 100),
            (phone("+14155550999"), 0),
        ):
            for i in range(4):
                n += 1
                engine.link(A, rec(f"r{n}", hub, phone(f"+1415555{n:04d}"), at=start + i))
        first_page = engine.list_isolated(A, limit=2)
        rest = engine.list_isolated(A, after=first_page[-1].pid, limit=10)
        lists.append([c.value for c in first_page + rest])
    assert lists == [["hub2@x.com", "hub1@x.com", "hub0@x.com", "+14155550999"]] * 3


def test_contacts_stored_before_first_seen_keys_get_them_from_their_records(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    config = engine.account_config(A)

    def forget_first_seen(txn) -> None:
        scoped = txn.account(config.account_id)
        for pid, contact in list(scoped.iter_contacts()):
            contact.first_key, contact.first_position = b"", 0
            scoped.put_contact(pid, contact)

    engine.store.write(forget_first_seen)
    engine.link(A, rec("2", email("b@x.com"), email("c@x.com"), at=2))  # the fast path
    assert values(engine, customer_of(engine, email("a@x.com"))) == [
        "a@x.com",
        "b@x.com",
        "c@x.com",
    ]
    rebuilt = engine.rebuild(A).contacts
    with engine.read(A) as view:
        for pid, contact in view.txn.iter_contacts():  # all loaded by the link
            node = rebuilt[pid]
            assert (contact.first_key, contact.first_position) == (node.first_key, node.position)
