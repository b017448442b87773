"""SPEC 3.2: the partition is a pure function of the records, key types and policies.

Whatever order records arrive in, one by one or in batches, with replacements,
deletions and do-not-link toggles, the stored customers equal a rebuild from
the final set of records, and no customer exceeds the cap or a key limit.
So does everything the records decide besides the partition: each record's
outcome and group, and each contact's connections, isolation, device move
and where it was first seen (the contact order of SPEC 3.8).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idlink.domain.contacts import ContactKey, prepare_contact
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_TRIM, AccountPolicy, KeyType
from idlink.domain.linking import CAPPED, CONFLICT
from idlink.domain.reads import AccountView
from idlink.security.crypto import open_store
from idlink.store import codec
from tests.domain.conftest import MASTER

ACCOUNT = "acme"
CAP = 6
ISOLATE_AT = 3
POOL = (
    [ContactKey("phone", f"+1415555{i:04d}") for i in range(6)]
    + [ContactKey("email", f"user{i}@example.com") for i in range(4)]
    + [ContactKey("member", f"M{i}") for i in range(3)]  # at most one per customer
    + [ContactKey("device", f"dev-{i}") for i in range(3)]  # reassignable
    + [ContactKey("email", "null")]  # invalid
)

contact_sets = st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=4)
records = st.tuples(
    st.sampled_from(["crm", "desk"]),
    st.integers(0, 7),  # record id: collisions are replacements
    contact_sets,
    st.integers(0, 12),  # observed_at: ties and out-of-order arrival
)
operations = st.lists(
    st.one_of(
        records.map(lambda r: ("upsert", r)),
        st.tuples(st.sampled_from(["crm", "desk"]), st.integers(0, 7)).map(lambda r: ("delete", r)),
        st.tuples(st.integers(0, len(POOL) - 1), st.booleans()).map(lambda r: ("dnl", r)),
    ),
    min_size=1,
    max_size=30,
)


def configure(engine: IdentityEngine) -> None:
    engine.set_account_policy(ACCOUNT, AccountPolicy(CAP, ISOLATE_AT))
    engine.put_key_type(ACCOUNT, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))


def to_input(record: tuple, deleted: bool = False) -> RecordInput:
    source, rid, members, observed = record
    return RecordInput(source, str(rid), [POOL[i] for i in members], observed, deleted)


def apply(engine: IdentityEngine, op: tuple) -> None:
    kind, args = op
    if kind == "upsert":
        engine.link(ACCOUNT, to_input(args))
    elif kind == "delete":
        engine.ingest(ACCOUNT, [RecordInput(args[0], str(args[1]), [], 0, deleted=True)])
    else:
        engine.set_contact_policy(ACCOUNT, POOL[args[0]], do_not_link=args[1])


def check_invariants(engine: IdentityEngine) -> None:
    stored = sorted(sorted(c) for c in engine.partition(ACCOUNT))
    rebuild = engine.rebuild(ACCOUNT)
    rebuilt = sorted(sorted(c) for c in rebuild.partition)
    assert stored == rebuilt
    config = engine.account_config(ACCOUNT)
    with engine.read(ACCOUNT) as view:
        for pid, contact in view.txn.iter_contacts():
            node = rebuild.contacts[pid]
            derived = (
                contact.connections,
                contact.isolated,
                contact.moved_at,
                contact.first_key,
                contact.first_position,
            )
            assert derived == (
                node.connections,
                node.isolated,
                node.moved_at,
                node.first_key,
                node.position,
            ), (contact.type, contact.value)
        for record in view.txn.iter_records():
            key = codec.canonical_key(record.observed_at_us, record.source, record.record_id)
            step = rebuild.results[key]
            assert (record.outcome, list(record.group_pids)) == (step.outcome, step.group)
        # A resolve skips the records of a linkable contact that is not marked refused
        # (ContactState.refused): every linkable contact a refused record names is.
        assert view.config.marks_refusals
        for record in view.txn.iter_records():
            if record.outcome in (CAPPED, CONFLICT):
                for pid in record.contact_pids:
                    contact = view.txn.get_contact(pid)
                    if not view.unlinkable_reason(pid, contact):
                        assert contact.refused, (contact.type, contact.value)
        for customer_pid, state in view.txn.iter_customers():
            members = list(state.contact_pids)
            assert len(members) <= CAP
            types = Counter()
            for pid in members:
                contact = view.txn.get_contact(pid)
                assert contact.customer_pid == customer_pid
                types[contact.type] += 1
            for name, count in types.items():
                limit = config.key_types[name].max_per_customer
                assert not limit or count <= limit, (name, count)


def check_resolves_read_what_they_need(engine: IdentityEngine) -> None:
    """Every resolve equals the one that reads every record of the contact (no marks used)."""
    secret = engine.secret(ACCOUNT)
    with engine.read(ACCOUNT) as view:
        reading_all = AccountView(view.txn, replace(view.config, marks_refusals=False))
        for key in POOL:
            prepared = prepare_contact(secret, view.config, key)
            assert view.resolve(prepared) == reading_all.resolve(prepared), key


@contextmanager
def fresh_engine() -> Iterator[IdentityEngine]:
    with (
        tempfile.TemporaryDirectory(prefix="idlink-prop-") as folder,
        open_store(folder, durable=False) as store,
    ):
        engine = IdentityEngine(store, MASTER)
        configure(engine)
        yield engine


SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(ops=operations)
def test_one_by_one_equals_rebuild(impl, ops):
    with fresh_engine() as engine:
        for op in ops:
            apply(engine, op)
            check_invariants(engine)
        check_resolves_read_what_they_need(engine)


@SETTINGS
@given(recs=st.lists(records, min_size=1, max_size=25), data=st.data())
def test_arrival_order_does_not_matter(impl, recs, data):
    final = {}
    for record in recs:
        final[(record[0], record[1])] = record
    order = data.draw(st.permutations(list(final.values())))
    with fresh_engine() as one_by_one, fresh_engine() as batched:
        for record in order:
            one_by_one.link(ACCOUNT, to_input(record))
        batched.ingest(ACCOUNT, [to_input(r) for r in recs])
        check_invariants(one_by_one)
        check_invariants(batched)
        check_resolves_read_what_they_need(one_by_one)
        check_resolves_read_what_they_need(batched)
        # Contact PIDs are keyed hashes of the same secret: the partitions compare directly.
        assert sorted(sorted(c) for c in one_by_one.partition(ACCOUNT)) == sorted(
            sorted(c) for c in batched.partition(ACCOUNT)
        )


@SETTINGS
@given(batches=st.lists(operations, min_size=1, max_size=4))
def test_batches_with_policy_changes_equal_rebuild(impl, batches):
    with fresh_engine() as engine:
        for ops in batches:
            records_only = [op for op in ops if op[0] != "dnl"]
            engine.ingest(
                ACCOUNT,
                [
                    to_input(args)
                    if kind == "upsert"
                    else RecordInput(args[0], str(args[1]), [], 0, True)
                    for kind, args in records_only
                ],
            )
            for op in ops:
                if op[0] == "dnl":
                    apply(engine, op)
            check_invariants(engine)
        check_resolves_read_what_they_need(engine)
