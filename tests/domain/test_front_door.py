"""The engine's front door: one clock for every time the domain stamps, and what it keeps."""

from __future__ import annotations

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine
from idlink.domain.keytypes import AccountPolicy, KeyType
from idlink.domain.retention import apply_retention
from idlink.store.txn import SecurityPolicyState

from .conftest import MASTER

DAY_US = 86_400 * 1_000_000
START = 1_700_000_000_000_000


class Clock:
    """A clock the test moves by hand (microseconds)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_an_account_keeps_its_creation_time_across_key_type_and_policy_writes(store):
    clock = Clock(START)
    engine = IdentityEngine(store, MASTER, clock=clock)
    engine.put_key_type("acme", KeyType("member"))
    clock.now += DAY_US
    engine.put_key_type("acme", KeyType("member", max_per_customer=1))
    clock.now += DAY_US
    engine.set_account_policy("acme", AccountPolicy(max_contacts=50))
    with engine.read("acme") as view:
        stored = view.txn.get_config()
    assert stored is not None
    assert stored.created_at_us == START


def test_every_time_an_operation_stamps_comes_from_the_engines_clock(store):
    engine = IdentityEngine(store, MASTER, clock=Clock(START))
    engine.set_contact_policy("acme", ContactKey("email", "a@x.com"), do_not_link=True)
    engagement = engine.record_engagement(
        "acme", ContactKey("email", "b@x.com"), occurred_at_us=START, channel="web"
    )
    assert engagement.recorded_at_us == START
    with engine.read("acme") as view:
        times = [e.at_us for e in view.txn.changes_after(0, 100)]
        times += [c.created_at_us for _, c in view.txn.iter_contacts()]
        times += [c.created_at_us for _, c in view.txn.iter_customers()]
    assert times and set(times) == {START}


def test_retention_sweeps_by_the_engines_clock(store):
    clock = Clock(START)
    engine = IdentityEngine(store, MASTER, clock=clock)
    key = ContactKey("email", "a@x.com")
    engine.record_engagement("acme", key, occurred_at_us=START, channel="web")
    engine.write(
        "acme",
        "admin",
        lambda unit: unit.txn.put_security_policy(
            SecurityPolicyState(engagement_retention_seconds=86_400)
        ),
    )
    assert apply_retention(engine, "acme").engagements_deleted == 0
    clock.now += 2 * DAY_US
    assert apply_retention(engine, "acme").engagements_deleted == 1
    with engine.read("acme") as view:
        assert list(view.txn.iter_engagements()) == []


def test_a_read_of_an_unknown_account_is_empty_and_creates_nothing(store):
    engine = IdentityEngine(store, MASTER)
    with engine.read("nobody") as view:
        assert not view.exists
        assert view.partition() == []
    with engine.read_keys() as txn:
        assert list(txn.iter_account_names()) == []
