"""SPEC 3.8: nothing the rules decide depends on the account secret.

Contact PIDs are keyed hashes of the account secret, so the order of PIDs
changes with the master secret. The same operations sent to two engines with
different master secrets must give, after every operation: the same partition
as sets of (type, source, cleaned value), the same outcome for every record
(as returned and as stored), the same isolated contacts with their counts,
the same moved devices and connection counts, and the same customer PID
lineage: which old customer's PID each part kept, which parts got a new PID
and whom they split from, and which PIDs now redirect to which part.

IDLINK_REFERENCE_EXAMPLES sets the number of examples per property (default 30).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import ExitStack

from hypothesis import given
from hypothesis import strategies as st

from idlink.domain.engine import IdentityEngine, RecordInput
from tests.domain.reference import Contact
from tests.domain.test_reference import (
    EXAMPLE_TYPES,
    POOL,
    SECRETS,
    SETTINGS,
    TIE_BREAK,
    TIE_POLICY,
    USE_CASE_6,
    USE_CASE_9_BEFORE,
    USE_CASE_9_LINK,
    A,
    World,
    engine_with,
    harness,
    operations,
    rec,
    records,
    snapshot,
    to_input,
    worlds,
)

secrets = st.binary(min_size=32, max_size=32)
steps = st.lists(
    st.one_of(
        operations.map(lambda ops: ("ops", ops)),
        st.lists(records, min_size=1, max_size=6).map(lambda recs: ("batch", recs)),
    ),
    min_size=1,
    max_size=6,
)

Lineage = list[tuple]


def send(engine: IdentityEngine, op: tuple) -> list[int]:
    """One operation; the outcomes the engine answered (none for deletes and policies)."""
    kind, args = op
    if kind == "upsert":
        return [engine.link(A, to_input(args)).outcome]
    if kind == "delete":
        engine.ingest(A, [RecordInput(args[0], str(args[1]), [], 0, deleted=True)])
    elif kind == "dnl":
        engine.set_contact_policy(A, POOL[args[0]], do_not_link=args[1])
    elif kind == "never":
        engine.set_contact_policy(A, POOL[args[0]], never_isolate=args[1])
    elif kind == "input":
        return [engine.link(A, args).outcome]
    else:
        return [r.outcome for r in engine.ingest(A, [to_input(r) for r in args])]
    return []


def lineage(engine: IdentityEngine, before: dict[bytes, frozenset[Contact]]) -> Lineage:
    """What happened to customer PIDs in one operation, in terms of contacts only."""
    after = snapshot(engine)
    found: Lineage = []
    for pid, contacts in after.customers.items():
        if pid in before:
            found.append(("kept", before[pid], contacts))
        else:
            origin = after.split_from[pid]
            found.append(("new", contacts, before.get(origin) if origin else None))
    for pid, contacts in before.items():
        if pid not in after.customers:
            survivor = engine.get_customer(A, pid).pid
            found.append(("redirected", contacts, after.customers[survivor]))
    return sorted(found, key=repr)


def assert_same(engines: Sequence[IdentityEngine], ops: Sequence[tuple]) -> None:
    """Send the same operations to every engine and compare everything after each."""
    before = [snapshot(e).customers for e in engines]
    for i, op in enumerate(ops):
        answered = [send(e, op) for e in engines]
        assert all(a == answered[0] for a in answered), (i, op, answered)
        states = [snapshot(e) for e in engines]
        first = states[0]
        for other in states[1:]:
            assert other.partition == first.partition, (i, op)
            assert other.outcomes == first.outcomes, (i, op)
            assert other.isolated == first.isolated, (i, op)
            assert other.moved == first.moved, (i, op)
            assert other.connections == first.connections, (i, op)
        lineages = [lineage(e, b) for e, b in zip(engines, before, strict=True)]
        for other in lineages[1:]:
            assert other == lineages[0], (i, op)
        before = [s.customers for s in states]


@SETTINGS
@given(world=worlds, plan=steps, masters=secrets.map(lambda s: (s, hashlib.sha256(s).digest())))
def test_two_master_secrets_give_the_same_customers_outcomes_and_pids(impl, world, plan, masters):
    ops = [op for kind, args in plan for op in (args if kind == "ops" else [("batch", args)])]
    with harness(world, masters[0]) as one, harness(world, masters[1]) as two:
        assert_same([one.engine, two.engine], ops)


def test_the_examples_are_the_same_under_eight_secrets(impl):
    """MXO use cases 6 and 9 (three orders inside the record) and the cap's tie."""
    ops: list[tuple] = [("input", r) for r in [*USE_CASE_6, *USE_CASE_9_BEFORE]]
    for n, order in enumerate([[0, 1, 2], [2, 1, 0], [1, 2, 0]]):
        link = rec(f"c{n}", *[USE_CASE_9_LINK[i] for i in order], at=3 + n)
        ops.append(("input", link))
    ops += [("input", r) for r in TIE_BREAK]
    with ExitStack() as stack:
        engines = [stack.enter_context(harness(World(), master)).engine for master in SECRETS[:8]]
        for engine in engines:
            engine_with(
                engine, EXAMPLE_TYPES["customer_key"], EXAMPLE_TYPES["crm_id"], policy=TIE_POLICY
            )
        assert_same(engines, ops)
