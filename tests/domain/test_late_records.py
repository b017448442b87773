"""Late, replaced and deleted records around isolated contacts (SPEC 3.2, 3.3).

A contact isolated before the earliest record an operation changes stays
isolated at the same record in the new history, and an isolated contact never
joins a customer again. Two shortcuts rest on that, and both must stay exact:

- the fast path ignores the watermark of such a contact
  (:meth:`LinkGraph.is_newest <idlink.domain.linking.LinkGraph.is_newest>`):
  a late record naming a placeholder and a contact nothing touched since is
  applied at once;
- a replay *cuts* its region there (:meth:`AccountUnit.region
  <idlink.domain.unit.AccountUnit.region>`): of a cut contact only the
  records up to its isolation are followed.

The properties compare everything the records decide, more than the
partition: every contact's connections, isolation (where and with how many
connections), device move and first-seen key, every customer's watermark, every
contact's stored connections (edges) and every record's outcome, group and
refused links, against the same records fed one by one in canonical order to
a fresh engine (which only ever takes the fast path).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_TRIM, AccountPolicy, KeyType
from idlink.domain.linking import LinkGraph, Node
from idlink.domain.unit import AccountUnit
from idlink.security.crypto import open_store
from idlink.store import codec
from tests.domain.conftest import MASTER

A = "acme"
HUBS = [ContactKey("email", f"hub{i}@x.com") for i in range(2)]
PEOPLE = (
    [ContactKey("email", f"p{i}@x.com") for i in range(6)]
    + [ContactKey("phone", f"+1415555{i:04d}") for i in range(3)]
    + [ContactKey("member", f"M{i}") for i in range(2)]  # one per customer
    + [ContactKey("device", "dev-1")]  # reassignable
)
POOL = HUBS + PEOPLE

Canon = tuple[str, str, str]


@contextmanager
def fresh(policy: AccountPolicy) -> Iterator[IdentityEngine]:
    with (
        tempfile.TemporaryDirectory(prefix="idlink-late-") as folder,
        open_store(folder, durable=False) as store,
    ):
        engine = IdentityEngine(store, MASTER)
        engine.set_account_policy(A, policy)
        engine.put_key_type(A, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))
        yield engine


def state(engine: IdentityEngine) -> dict[str, object]:
    """Everything the records decide, named by (type, source, value), never by a PID."""
    with engine.read(A) as view:
        txn = view.txn
        contacts = dict(txn.iter_contacts())
        records = list(txn.iter_records())
        named = {p for r in records for p in r.contact_pids}
        name: dict[bytes, Canon] = {p: (c.type, c.source, c.value) for p, c in contacts.items()}

        def key(k: bytes) -> tuple[int, str, str] | None:
            return codec.split_canonical_key(k) if k else None

        per_contact = {
            name[p]: (
                c.connections,
                c.isolated,
                key(c.isolated_at),
                c.isolated_connections,
                key(c.moved_at),
                key(c.first_key),
                c.first_position,
                sorted(name[o] for o in txn.neighbours_of(p)),
            )
            for p, c in contacts.items()
            if p in named
        }
        customers = {}
        for _, customer in txn.iter_customers():
            members = frozenset(name[p] for p in customer.contact_pids if p in named)
            if members:
                customers[members] = key(customer.watermark)
        per_record = {
            (r.source, r.record_id): (
                r.outcome,
                [name[p] for p in r.group_pids],
                [name[p] for p in r.conflict_contact_pids],
            )
            for r in records
        }
        return {"contacts": per_contact, "customers": customers, "records": per_record}


def canonical_state(policy: AccountPolicy, records: dict[tuple[str, str], RecordInput]):
    """The same records one by one, in canonical order, into a fresh engine."""
    with fresh(policy) as engine:
        for record in sorted(
            records.values(), key=lambda r: (r.observed_at_us, r.source, r.record_id)
        ):
            engine.link(A, record)
        return state(engine)


# -- the properties ---------------------------------------------------------------------

policies = st.builds(AccountPolicy, st.integers(3, 4), st.sampled_from([2, 3]))
# Most records name a hub: hubs are what gets isolated.
contact_lists = st.lists(st.sampled_from(range(len(PEOPLE))), min_size=1, max_size=3).flatmap(
    lambda people: st.lists(st.sampled_from(range(len(HUBS))), max_size=2).map(
        lambda hubs: [*hubs, *(len(HUBS) + p for p in people)]
    )
)
records = st.tuples(
    st.sampled_from(["crm", "desk"]),
    st.integers(0, 9),  # record id: collisions are replacements
    contact_lists,
    st.integers(0, 20),  # observed_at: late arrivals
)
operations = st.lists(
    st.one_of(
        records.map(lambda r: ("upsert", r)),
        records.map(lambda r: ("upsert", r)),
        records.map(lambda r: ("upsert", r)),
        st.tuples(st.sampled_from(["crm", "desk"]), st.integers(0, 9)).map(lambda r: ("delete", r)),
    ),
    min_size=4,
    max_size=30,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def to_input(args: tuple) -> RecordInput:
    source, rid, members, observed = args
    return RecordInput(source, str(rid), [POOL[i] for i in members], observed)


@SETTINGS
@given(policy=policies, ops=operations)
def test_one_operation_at_a_time_equals_canonical_order(impl, policy, ops):
    live: dict[tuple[str, str], RecordInput] = {}
    with fresh(policy) as engine:
        for i, (kind, args) in enumerate(ops):
            if kind == "upsert":
                record = to_input(args)
                live[(record.source, record.record_id)] = record
            else:
                record = RecordInput(args[0], str(args[1]), [], 0, deleted=True)
                live.pop((record.source, record.record_id), None)
            engine.ingest(A, [record])
            assert state(engine) == canonical_state(policy, live), f"after operation {i}"
        if any(c[1] for c in state(engine)["contacts"].values()):  # type: ignore[attr-defined]
            event("a contact isolated")


@SETTINGS
@given(policy=policies, batches=st.lists(operations, min_size=1, max_size=3))
def test_batches_equal_canonical_order(impl, policy, batches):
    live: dict[tuple[str, str], RecordInput] = {}
    with fresh(policy) as engine:
        for ops in batches:
            batch = []
            for kind, args in ops:
                if kind == "upsert":
                    record = to_input(args)
                else:
                    record = RecordInput(args[0], str(args[1]), [], 0, deleted=True)
                batch.append(record)
            for record in batch:
                if record.deleted:
                    live.pop((record.source, record.record_id), None)
                else:
                    live[(record.source, record.record_id)] = record
            engine.ingest(A, batch)
            assert state(engine) == canonical_state(policy, live)


# -- hand-written examples --------------------------------------------------------------

POLICY = AccountPolicy(max_contacts=3, isolate_min_connections=2)
HUB = ContactKey("email", "no@email.com")


def person(i: int) -> ContactKey:
    return ContactKey("email", f"person{i}@x.com")


def rec(rid: str, *contacts: ContactKey, at: int) -> RecordInput:
    return RecordInput("crm", rid, list(contacts), at)


def hub_world(engine: IdentityEngine) -> list[RecordInput]:
    """no@email.com with person 0..3 at 10, 20, 30, 40: isolated by the record at 30."""
    sent = [rec(f"h{i}", person(i), HUB, at=10 * (i + 1)) for i in range(4)]
    for record in sent:
        engine.link(A, record)
    [isolated] = engine.list_isolated(A)
    assert isolated.value == "no@email.com"
    return sent


def pid_of(engine: IdentityEngine, key: ContactKey) -> bytes:
    return engine.resolve(A, key).contact_pid


def region_of(
    engine: IdentityEngine, seeds: set[bytes], since: bytes | None
) -> tuple[set[bytes], dict[bytes, bytes]]:
    def run(unit: AccountUnit) -> tuple[set[bytes], dict[bytes, bytes]]:
        region = unit.region(seeds, since)
        return set(region.records), dict(region.cut)

    return engine.write(A, "", run)


def key_of(record: RecordInput) -> bytes:
    return codec.canonical_key(record.observed_at_us, record.source, record.record_id)


def test_a_region_is_cut_at_a_contact_isolated_before_the_change(impl):
    with fresh(POLICY) as engine:
        sent = hub_world(engine)
        hub = pid_of(engine, HUB)
        isolated_at = key_of(sent[2])
        # Changed at 35: the hub was isolated at 30, so its record at 40 is not followed.
        records, cut = region_of(engine, {hub}, codec.canonical_key(35, "crm", "x"))
        assert cut == {hub: isolated_at}
        assert records == {key_of(r) for r in sent[:3]}
        # Changed at 30 (the record that isolated it) or before: nothing is cut.
        for since in (isolated_at, codec.canonical_key(5, "crm", "x"), None):
            records, cut = region_of(engine, {hub}, since)
            assert cut == {}
            assert records == {key_of(r) for r in sent}


def test_a_late_record_naming_an_isolated_placeholder_takes_the_fast_path(impl):
    with fresh(POLICY) as engine:
        hub_world(engine)
        replays = []
        original = AccountUnit.replay

        def counting(unit: AccountUnit, region):  # type: ignore[no-untyped-def]
            replays.append(len(region.records))
            return original(unit, region)

        AccountUnit.replay = counting  # type: ignore[method-assign]
        try:
            late = rec("late", person(9), HUB, at=35)  # older than the hub's newest record
            engine.link(A, late)
            assert replays == []
            sent = {(r.source, r.record_id): r for r in [*hub_world_records(), late]}
            assert state(engine) == canonical_state(POLICY, sent)
            # Older than the isolation: replayed, the hub's records in full.
            earlier = rec("earlier", person(8), HUB, at=25)
            engine.link(A, earlier)
            assert replays == [6]
            sent[("crm", "earlier")] = earlier
            assert state(engine) == canonical_state(POLICY, sent)
        finally:
            AccountUnit.replay = original  # type: ignore[method-assign]


def hub_world_records() -> list[RecordInput]:
    return [rec(f"h{i}", person(i), HUB, at=10 * (i + 1)) for i in range(4)]


def test_deleting_the_record_that_isolated_a_placeholder_replays_it_whole(impl):
    with fresh(POLICY) as engine:
        sent = {(r.source, r.record_id): r for r in hub_world(engine)}
        engine.delete_record(A, "crm", "h2")
        del sent[("crm", "h2")]
        after = state(engine)
        assert after == canonical_state(POLICY, sent)
        # Isolated again, by the next record that reaches the cap.
        assert after["contacts"][("email", "", "no@email.com")][2] == (40, "crm", "h3")


def test_a_late_record_between_two_placeholders_keeps_their_connection(impl):
    """Two hubs isolated early; a late record names both, and a person with a newer record."""
    other = ContactKey("email", "none@email.com")
    with fresh(POLICY) as engine:
        sent = {}
        for i in range(4):
            for record in (
                rec(f"a{i}", person(i), HUB, at=10 * (i + 1)),
                rec(f"b{i}", person(10 + i), other, at=10 * (i + 1) + 1),
            ):
                engine.link(A, record)
                sent[(record.source, record.record_id)] = record
        both = rec("both", HUB, other, at=60)
        engine.link(A, both)
        sent[("crm", "both")] = both
        late = rec("late", person(3), HUB, other, at=45)  # person 3 has a record at 40
        engine.link(A, late)
        sent[("crm", "late")] = late
        assert state(engine) == canonical_state(POLICY, sent)
        engine.delete_record(A, "crm", "late")
        del sent[("crm", "late")]
        assert state(engine) == canonical_state(POLICY, sent)
        engine.delete_record(A, "crm", "both")
        del sent[("crm", "both")]
        assert state(engine) == canonical_state(POLICY, sent)


def test_is_newest_ignores_only_contacts_isolated_before_the_record():
    graph = LinkGraph(3, 2)
    graph.add_node(Node(b"h", "email", True, False, 0, 0, isolated=True, isolated_at=b"k5"))
    graph.add_node(Node(b"p", "email", True, False, 0, 1))
    graph.raise_watermark(b"h", b"k9")
    assert graph.is_newest(b"k6", [b"h", b"p"])
    assert not graph.is_newest(b"k5", [b"h", b"p"])
    assert not graph.is_newest(b"k4", [b"h", b"p"])
    graph.nodes[graph.index[b"h"]].usable = False  # not usable: its watermark counts
    assert not graph.is_newest(b"k6", [b"h", b"p"])
    graph.raise_watermark(b"p", b"k7")
    graph.raise_watermark(b"p", b"k1")  # only grows
    assert not graph.is_newest(b"k7", [b"p"])
    assert graph.is_newest(b"k8", [b"p"])


def test_a_replaced_record_that_names_only_cut_contacts_is_still_replayed(impl):
    with fresh(POLICY) as engine:
        sent = {(r.source, r.record_id): r for r in hub_world(engine)}
        for record in (rec("x", person(5), HUB, at=50), rec("x", HUB, at=60)):
            engine.link(A, record)
            sent[(record.source, record.record_id)] = record
            assert state(engine) == canonical_state(POLICY, sent)
        assert state(engine)["records"][("crm", "x")] == (1, [], [])  # APPLIED, no group


def test_a_batch_with_a_late_record_and_a_fresh_one_naming_a_cut_contact(impl):
    """The fresh record is outside the late one's region: the cut hub's watermark is its key."""
    with fresh(POLICY) as engine:
        sent = {(r.source, r.record_id): r for r in hub_world(engine)}
        batch = [
            rec("late", person(3), HUB, at=35),  # person 3 has a record at 40: a replay
            rec("fresh", person(20), HUB, at=100),  # the fast path
        ]
        engine.ingest(A, batch)
        sent.update({(r.source, r.record_id): r for r in batch})
        after = state(engine)
        assert after == canonical_state(POLICY, sent)
        assert after["customers"][frozenset({("email", "", "no@email.com")})] == (
            100,
            "crm",
            "fresh",
        )


def test_record_keys_up_to_a_key_stop_within_a_time(impl):
    """``until`` keeps the keys up to it, records at its time included by record id."""
    with fresh(POLICY) as engine:
        for rid, at in (("a", 10), ("a2", 20), ("c2", 20), ("d", 30)):
            engine.link(A, rec(rid, person(0), person(1), at=at))
        pid = pid_of(engine, person(0))

        def keys(until: bytes | None) -> list[bytes]:
            return engine.write(
                A, "", lambda unit: [k for k, _ in unit.txn.keyed_records_of(pid, until)]
            )

        every = keys(None)
        assert every == sorted(every) and len(every) == 4
        assert keys(codec.canonical_key(20, "crm", "b")) == every[:2]
        assert keys(codec.canonical_key(20, "crm", "c2")) == every[:3]
        assert keys(codec.canonical_key(5, "crm", "a")) == []
        assert keys(codec.canonical_key(99, "crm", "a")) == every
