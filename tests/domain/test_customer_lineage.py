"""What a customer's history, pins and profile say through merges and splits (SPEC 3.5-3.7).

Mutation testing (docs/testing.md) found these rules with no test that would
notice them change: the kind of a change event and the customers and
contacts it names, a pin of a customer that is merged away, the preferences
of a merged profile, the creation time of a split customer, and the reason
of a refused normalizer change.
"""

from __future__ import annotations

import pytest

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_TRIM, KeyType
from idlink.domain.pids import merge_profile
from idlink.errors import FailedPrecondition
from idlink.security.crypto import open_store
from idlink.store.txn import Profile
from tests.domain.conftest import MASTER

A = "acme"


def email(v: str) -> ContactKey:
    return ContactKey("email", v)


def rec(rid: str, *contacts: ContactKey, at: int) -> RecordInput:
    return RecordInput("crm", rid, list(contacts), at)


def pid_of(engine: IdentityEngine, key: ContactKey) -> bytes:
    return engine.resolve(A, key).contact_pid


def customer_of(engine: IdentityEngine, key: ContactKey) -> bytes:
    answer = engine.resolve(A, key)
    assert answer.customer is not None
    return answer.customer.pid


def test_a_new_customer_is_created_from_nobody(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    [event] = engine.changes_after(A, 0)
    assert event.kind == "created"
    assert list(event.other_customer_pids) == []
    a, b = pid_of(engine, email("a@x.com")), pid_of(engine, email("b@x.com"))
    assert set(event.contacts_added) == {a, b}
    assert list(event.contacts_removed) == []


def test_a_split_names_the_customer_it_split_from_and_the_contacts_that_moved(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), email("c@x.com"), at=2))
    before = customer_of(engine, email("a@x.com"))
    seq = engine.changes_after(A, 0)[-1].seq
    engine.link(A, rec("2", email("c@x.com"), email("d@x.com"), at=2))  # replaced: c leaves
    split = customer_of(engine, email("c@x.com"))
    events = {e.customer_pid: e for e in engine.changes_after(A, seq)}
    c, d = pid_of(engine, email("c@x.com")), pid_of(engine, email("d@x.com"))
    assert events[split].kind == "split"
    assert list(events[split].other_customer_pids) == [before]
    assert set(events[split].contacts_added) == {c, d}
    assert list(events[split].contacts_removed) == []
    assert events[before].kind == "updated"
    assert list(events[before].contacts_added) == []
    assert list(events[before].contacts_removed) == [c]
    # Both customers' histories tell it (SPEC 3.7).
    assert engine.history(A, before)[-1].kind == "split"
    assert engine.history(A, split)[-1].kind == "split"


def test_a_merge_names_the_customer_merged_away_and_the_contacts_added(engine):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), at=2))
    older, younger = customer_of(engine, email("a@x.com")), customer_of(engine, email("b@x.com"))
    engine.link(A, rec("3", email("a@x.com"), email("b@x.com"), at=3))
    event = engine.changes_after(A, 0)[-1]
    assert (event.kind, event.customer_pid) == ("merged", older)
    assert list(event.other_customer_pids) == [younger]
    assert list(event.contacts_added) == [pid_of(engine, email("b@x.com"))]
    assert list(event.contacts_removed) == []


def test_a_record_that_changes_no_customer_tells_the_change_feed_nothing(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    seq = engine.changes_after(A, 0)[-1].seq
    engine.link(A, rec("2", email("b@x.com"), email("a@x.com"), at=2))
    assert engine.changes_after(A, seq) == []


def test_a_pin_of_a_customer_merged_away_moves_to_the_survivor(engine):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    engine.link(A, rec("2", email("z@x.com"), at=2))
    engine.link(A, rec("3", email("x@x.com"), at=3))
    older, younger = customer_of(engine, email("a@x.com")), customer_of(engine, email("z@x.com"))
    call = engine.record_engagement(A, email("x@x.com"), occurred_at_us=10, channel="voice")
    engine.relink_engagement(A, call.engagement_id, younger, actor="agent")
    engine.link(A, rec("4", email("a@x.com"), email("z@x.com"), at=4))
    assert engine.get_customer(A, younger).pid == older
    _, page, _ = engine.list_journey(A, older)
    assert [e.engagement_id for e in page] == [call.engagement_id]
    _, page, _ = engine.list_journey(A, customer_of(engine, email("x@x.com")))
    assert page == []


def test_a_merged_profile_takes_preferences_only_when_the_survivor_has_none():
    survivor, other = Profile(preferences=b"ours"), Profile(preferences=b"theirs")
    merge_profile(survivor, other)
    assert survivor.preferences == b"ours"
    empty = Profile()
    merge_profile(empty, other)
    assert empty.preferences == b"theirs"


def test_a_split_customer_is_created_when_the_split_happens(impl, tmp_path):
    now = [1_000]
    with open_store(tmp_path / "store", durable=False) as store:
        engine = IdentityEngine(store, MASTER, clock=lambda: now[0])
        engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
        now[0] = 2_000
        engine.link(A, rec("1", email("a@x.com"), at=1))
        assert engine.get_customer(A, customer_of(engine, email("a@x.com"))).created_at_us == 1_000
        assert engine.get_customer(A, customer_of(engine, email("b@x.com"))).created_at_us == 2_000


def test_a_normalizer_change_of_a_type_in_use_is_refused_with_its_reason(engine):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    with pytest.raises(FailedPrecondition) as refused:
        engine.put_key_type(A, KeyType("email", NORMALIZER_TRIM))
    assert refused.value.reason == "KEY_TYPE_IN_USE"
    assert "'email'" in refused.value.message
