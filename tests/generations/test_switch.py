"""The switch of a generation into a live account (domain/switch.py), on a stand-in writer.

The stand-in writes a "generation" into the staging account by applying the
records of the export moment through the domain's record path
(``switch.stage_records``): the staging account then holds what a rebuild
from those records gives. The real writer (generations/materialize.py)
writes the same derived rows with appending writes.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from idlink.domain import switch
from idlink.domain.accounts import staging_name
from idlink.domain.check import check_store
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_TRIM, AccountPolicy, KeyType
from idlink.errors import FailedPrecondition
from idlink.security.crypto import open_store
from idlink.security.secrets import load_master_secret

ACCOUNT = "acme"


@pytest.fixture
def engine(tmp_path: Path):
    data = tmp_path / "data"
    with open_store(data, durable=False) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        engine.set_account_policy(ACCOUNT, AccountPolicy(6, 3))
        engine.put_key_type(ACCOUNT, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))
        yield engine


def _records(rng: random.Random, count: int, start: int, prefix: str = "r") -> list[RecordInput]:
    out = []
    for i in range(count):
        keys = [ContactKey("email", f"p{rng.randrange(40)}@x.test")]
        if rng.random() < 0.7:
            keys.append(ContactKey("phone", f"+4420794600{rng.randrange(60):02d}"))
        if rng.random() < 0.2:
            keys.append(ContactKey("member", f"m{rng.randrange(15)}", source="crm"))
        out.append(RecordInput("crm", f"{prefix}{i}", keys, start + rng.randrange(10_000)))
    return out


def baseline_of(engine: IdentityEngine, account: str = ACCOUNT) -> switch.Baseline:
    with engine.read(account) as view:
        return switch.Baseline(
            change_seq=view.txn.change_seq(),
            record_log_seq=view.txn.record_log_seq(),
            account_id=view.txn.account_id,
            config_version=view.txn.config_version(),
        )


def exported_records(engine: IdentityEngine, account: str = ACCOUNT) -> list:
    with engine.read(account) as view:
        return list(view.txn.iter_records())


def stand_in_writer(engine: IdentityEngine, staging: switch.Staging, exported: list) -> None:
    """Write the export's records into the staging account through the record path."""

    def run(txn):
        live, staged = txn.account(staging.live_id), txn.account(staging.staging_id)
        switch.stage_records(engine, live, staged, exported)

    engine.write_keys(run)


def load(engine: IdentityEngine, baseline: switch.Baseline, exported: list, between=None):
    staging = switch.begin(engine, ACCOUNT, baseline)
    stand_in_writer(engine, staging, exported)
    switch.copy_base(engine, staging, page=3)  # many pages, each its own transaction
    if between is not None:
        between()
    rounds = 0
    while switch.catch_up(engine, staging, limit=7) > 0:
        rounds += 1
    report = switch.switch(engine, staging)
    switch.drop_pending(engine, batch=50)
    return staging, report, rounds


def _sorted_partition(parts) -> list:
    return sorted(sorted(p) for p in parts)


def test_records_after_an_export_are_logged(engine: IdentityEngine) -> None:
    rng = random.Random(1)
    engine.ingest(ACCOUNT, _records(rng, 20, 0))
    base = baseline_of(engine)
    late = _records(rng, 5, 0, prefix="late")
    engine.ingest(ACCOUNT, late)
    engine.delete_record(ACCOUNT, "crm", "r3")
    with engine.read(ACCOUNT) as view:
        after = view.txn.records_after(base.record_log_seq, 1000)
    written = {r.record_id for _, r, _ in after if r is not None}
    deleted = {d for _, _, d in after if d is not None}
    assert {r.record_id for r in late} <= written
    assert deleted == {("crm", "r3")}
    assert all(seq > base.record_log_seq for seq, _, _ in after)


def test_staging_account_is_hidden_and_stale_one_dropped(engine: IdentityEngine) -> None:
    engine.ingest(ACCOUNT, _records(random.Random(2), 10, 0))
    first = switch.begin(engine, ACCOUNT, baseline_of(engine))
    with engine.read_keys() as txn:
        assert list(txn.iter_account_names()) == [ACCOUNT]
        assert txn.account_id(staging_name(ACCOUNT)) == first.staging_id
    assert first.staging_id > first.live_id
    assert [name for name, _ in switch.staging_accounts(engine)] == [staging_name(ACCOUNT)]
    assert engine.account_config(staging_name(ACCOUNT)).key_types == (
        engine.account_config(ACCOUNT).key_types
    )
    # A crashed load left it: the next begin drops it and makes a fresh one.
    second = switch.begin(engine, ACCOUNT, baseline_of(engine))
    assert second.staging_id > first.staging_id
    assert switch.pending_drops(engine) == [first.staging_id]
    switch.drop_pending(engine, batch=3)
    assert switch.pending_drops(engine) == []
    assert all(r.ok for r in check_store(engine))


def test_switch_keeps_every_record_and_continues_the_feed(engine: IdentityEngine) -> None:
    rng = random.Random(3)
    engine.ingest(ACCOUNT, _records(rng, 60, 100_000))
    engine.record_engagement(
        ACCOUNT, ContactKey("email", "p1@x.test"), occurred_at_us=5, channel="email"
    )
    base = baseline_of(engine)
    exported = exported_records(engine)
    feed_before = engine.changes_after(ACCOUNT, 0, 100_000)
    with engine.read(ACCOUNT) as view:
        histories = {pid: view.history(pid) for pid, _ in view.txn.iter_customers()}

    def between() -> None:
        # Late and new records, a deletion and a policy change after the export.
        engine.ingest(ACCOUNT, _records(rng, 15, 0, prefix="late"))
        engine.ingest(ACCOUNT, _records(rng, 15, 200_000, prefix="new"))
        engine.delete_record(ACCOUNT, "crm", "r5")
        engine.set_contact_policy(ACCOUNT, ContactKey("email", "p2@x.test"), do_not_link=True)

    staging, report, rounds = load(engine, base, exported, between)
    assert rounds >= 1
    live_records = {(r.source, r.record_id) for r in exported_records(engine)}
    assert ("crm", "late3") in live_records and ("crm", "r5") not in live_records
    assert len(live_records) == 60 - 1 + 30 - len({r.record_id for r in []})
    assert _sorted_partition(engine.partition(ACCOUNT)) == _sorted_partition(
        engine.rebuild_partition(ACCOUNT)
    )
    with engine.read_keys() as txn:
        assert txn.account_id(ACCOUNT) == staging.staging_id
        assert list(txn.iter_account_names()) == [ACCOUNT]
        assert txn.account_id(staging_name(ACCOUNT)) is None
        assert txn.dropping() == []
        assert txn.account(staging.live_id).get_config() is None
    feed = engine.changes_after(ACCOUNT, 0, 100_000)
    seqs = [e.seq for e in feed]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e.SerializeToString() for e in feed[: len(feed_before)]] == [
        e.SerializeToString() for e in feed_before
    ]
    for pid, events in histories.items():  # copied page by page, then the switch's own
        assert engine.history(ACCOUNT, pid)[: len(events)] == events
    switch_events = [e for e in feed if e.detail == "generation load"]
    assert switch_events and switch_events[0].seq == report.first_seq
    assert sum(report.events.values()) == len(switch_events)
    # The stand-in numbers every customer anew: each stored customer is told as created
    # or split, and every live customer before the switch is named (merged or split from).
    assert {e.kind for e in switch_events} <= {"created", "split", "merged", "updated"}
    policy = engine.resolve(ACCOUNT, ContactKey("email", "p2@x.test"))
    assert policy.status  # the do-not-link contact is still known
    reports = check_store(engine)
    assert [r.problems for r in reports] == [[]]


def test_engine_reads_the_new_account_after_the_switch(engine: IdentityEngine) -> None:
    """The configuration cache is keyed by account id too: the new id is read, not the old."""
    rng = random.Random(4)
    engine.ingest(ACCOUNT, _records(rng, 20, 0))
    old_config = engine.account_config(ACCOUNT)
    staging, _, _ = load(engine, baseline_of(engine), exported_records(engine))
    assert engine.account_config(ACCOUNT).account_id == staging.staging_id != old_config.account_id
    engine.ingest(ACCOUNT, _records(rng, 5, 50_000, prefix="after"))
    with engine.read(ACCOUNT) as view:
        assert view.txn.account_id == staging.staging_id
        assert view.txn.get_record("crm", "after1") is not None


def test_a_generation_of_a_replaced_account_id_is_refused(engine: IdentityEngine) -> None:
    engine.ingest(ACCOUNT, _records(random.Random(5), 10, 0))
    old = baseline_of(engine)
    load(engine, baseline_of(engine), exported_records(engine))
    with pytest.raises(switch.GenerationTooOld, match="earlier generation"):
        switch.begin(engine, ACCOUNT, old)
    assert switch.staging_accounts(engine) == []


def test_a_configuration_change_since_the_export_refuses_the_switch(
    engine: IdentityEngine,
) -> None:
    engine.ingest(ACCOUNT, _records(random.Random(6), 10, 0))
    base = baseline_of(engine)
    staging = switch.begin(engine, ACCOUNT, base)
    stand_in_writer(engine, staging, exported_records(engine))
    switch.copy_base(engine, staging)
    before = _sorted_partition(engine.partition(ACCOUNT))
    engine.set_account_policy(ACCOUNT, AccountPolicy(5, 3))
    with pytest.raises(FailedPrecondition, match="configuration") as refused:
        switch.switch(engine, staging)
    assert refused.value.reason == "CONFIGURATION_CHANGED"
    with engine.read_keys() as txn:
        assert txn.account_id(ACCOUNT) == staging.live_id
    assert len(before) > 0


def test_engagements_pins_and_profiles_follow_the_switch(engine: IdentityEngine) -> None:
    from idlink.domain.profiles import ProfileUpdate, update_customer

    rng = random.Random(7)
    engine.ingest(ACCOUNT, _records(rng, 30, 0))
    key = ContactKey("email", "p1@x.test")
    before = engine.resolve(ACCOUNT, key).customer.pid
    assert before
    early = engine.record_engagement(ACCOUNT, key, occurred_at_us=5, channel="email")
    base, exported = baseline_of(engine), exported_records(engine)

    def between() -> None:
        # After the copy: a profile change, a new engagement and a pin on the live account.
        update_customer(engine, ACCOUNT, before, ProfileUpdate(add_labels=["vip"]))
        late = engine.record_engagement(ACCOUNT, key, occurred_at_us=9, channel="phone")
        engine.relink_engagement(ACCOUNT, late.engagement_id, before)

    staging, report, _ = load(engine, base, exported, between)
    after = engine.resolve(ACCOUNT, key).customer.pid
    # The stand-in numbers customers anew: the old PID redirects to the one holding p1 now.
    assert engine.get_customer(ACCOUNT, before).pid == after
    view = engine.get_customer(ACCOUNT, after)
    assert "vip" in list(view.profile.labels)
    _, journey, _ = engine.list_journey(ACCOUNT, after)
    ids = {e.engagement_id for e in journey}
    assert early.engagement_id in ids and len(ids) == 2
    with engine.read(ACCOUNT) as v:
        assert v.txn.pins_of(after) and not v.txn.pins_of(before)
    history = engine.history(ACCOUNT, after)
    assert any(e.detail == "generation load" for e in history)
    assert [r.problems for r in check_store(engine)] == [[]]


def _follow(model: dict[bytes, set[bytes]], events) -> dict[bytes, set[bytes]]:
    """What a consumer of the feed knows: customers and contacts, events applied in order."""
    for e in events:
        if e.kind == "merged":
            for other in e.other_customer_pids:
                model.pop(other, None)
        if e.kind in ("split", "created"):
            model[e.customer_pid] = set()
        current = model.setdefault(e.customer_pid, set())
        current |= set(e.contacts_added)
        current -= set(e.contacts_removed)
    return {pid: members for pid, members in model.items() if members}


def test_a_consumer_of_the_feed_follows_the_switch(engine: IdentityEngine, monkeypatch) -> None:
    """Writes between the switch's plan and its transaction are in its events too."""
    rng = random.Random(8)
    engine.ingest(ACCOUNT, _records(rng, 50, 100_000))
    base, exported = baseline_of(engine), exported_records(engine)
    before_switch: dict[bytes, set[bytes]] = {}
    plan = switch.plan_switch

    def plan_then_write(engine_: IdentityEngine, staging: switch.Staging) -> switch.SwitchPlan:
        made = plan(engine_, staging)
        # After the plan: late records (replays, merges), a deletion (a split).
        engine.ingest(ACCOUNT, _records(rng, 10, 0, prefix="late"))
        engine.delete_record(ACCOUNT, "crm", "r4")
        with engine.read(ACCOUNT) as view:
            before_switch.update({pid: set(c.contact_pids) for pid, c in view.txn.iter_customers()})
        return made

    monkeypatch.setattr(switch, "plan_switch", plan_then_write)
    _, report, _ = load(engine, base, exported)
    feed = engine.changes_after(ACCOUNT, report.first_seq - 1, 100_000)
    assert feed and all(e.detail == "generation load" for e in feed)
    with engine.read(ACCOUNT) as view:
        stored = {pid: set(c.contact_pids) for pid, c in view.txn.iter_customers()}
        assert view.txn.get_record("crm", "late3") is not None
        assert view.txn.get_record("crm", "r4") is None
    assert _follow(dict(before_switch), feed) == stored
    assert [r.problems for r in check_store(engine)] == [[]]


def test_an_erasure_after_the_export_refuses_the_switch(engine: IdentityEngine) -> None:
    """The generation still holds the erased contacts: they must not come back."""
    from idlink.domain.erasure import erase_customer

    engine.ingest(ACCOUNT, _records(random.Random(9), 20, 0))
    base, exported = baseline_of(engine), exported_records(engine)
    staging = switch.begin(engine, ACCOUNT, base)
    stand_in_writer(engine, staging, exported)
    switch.copy_base(engine, staging)
    victim = engine.resolve(ACCOUNT, ContactKey("email", "p1@x.test")).customer.pid
    erase_customer(engine, ACCOUNT, victim, "dpo")
    with pytest.raises(FailedPrecondition, match="erased after the export") as refused:
        switch.switch(engine, staging)
    assert refused.value.reason == "ERASED_SINCE_EXPORT"
    switch.abandon(engine, staging)
    with engine.read_keys() as txn:
        assert txn.account_id(ACCOUNT) == staging.live_id
        assert txn.account(staging.staging_id).get_config() is None  # dropped
        assert not list(txn.iter_hidden_account_names())
    assert [r.problems for r in check_store(engine)] == [[]]


def test_compaction_finishes_an_interrupted_drop(tmp_path: Path) -> None:
    from idlink.store.env import compact_in_place

    data = tmp_path / "data"
    with open_store(data, durable=False) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        engine.put_key_type(ACCOUNT, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))
        engine.ingest(ACCOUNT, _records(random.Random(10), 20, 0))
        staging = switch.begin(engine, ACCOUNT, baseline_of(engine))
        stand_in_writer(engine, staging, exported_records(engine))
        # A load killed after making its staging account: the next one marks it dropped.
        switch.begin(engine, ACCOUNT, baseline_of(engine))
        assert switch.pending_drops(engine) == [staging.staging_id]
    compact_in_place(data)
    with open_store(data, durable=False) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        assert switch.pending_drops(engine) == []
        with engine.read_keys() as txn:
            gone = txn.account(staging.staging_id)
            assert gone.get_config() is None and not list(gone.iter_customers())
            assert not list(gone.iter_records())
        assert _sorted_partition(engine.partition(ACCOUNT)) == _sorted_partition(
            engine.rebuild_partition(ACCOUNT)
        )


def test_the_record_log_can_be_forgotten(engine: IdentityEngine) -> None:
    """What an erasure would call: the deleted records' sealed ids leave the log."""
    engine.ingest(ACCOUNT, _records(random.Random(11), 10, 0))
    engine.delete_record(ACCOUNT, "crm", "r2")

    def forget(txn):
        scoped = txn.account(txn.account_id(ACCOUNT))
        seq = scoped.record_log_seq()
        return scoped.forget_record_log(), seq

    deleted, seq = engine.write_keys(forget)
    assert deleted >= 11
    with engine.read(ACCOUNT) as view:
        assert view.txn.log_after(0, 100) == []
        assert view.txn.record_log_seq() == seq  # new entries keep counting up
    engine.ingest(ACCOUNT, _records(random.Random(12), 1, 0, prefix="n"))
    with engine.read(ACCOUNT) as view:
        entries = view.txn.log_after(0, 100)
        assert entries and entries[0].seq == seq + 1


def test_contacts_no_record_names_come_along(engine: IdentityEngine) -> None:
    """A resolve that creates and an engagement on a new contact, after the export."""
    engine.ingest(ACCOUNT, _records(random.Random(13), 20, 0))
    base, exported = baseline_of(engine), exported_records(engine)
    lonely = ContactKey("email", "lonely@x.test")
    talker = ContactKey("phone", "+442079460999")

    def between() -> None:
        assert engine.resolve(ACCOUNT, lonely, create_if_missing=True).customer.pid
        engine.record_engagement(ACCOUNT, talker, occurred_at_us=7, channel="phone")

    load(engine, base, exported, between)
    found = engine.resolve(ACCOUNT, lonely)
    assert found.customer.pid and [c.pid for c in found.customer.contacts]
    customer = engine.resolve(ACCOUNT, talker).customer.pid
    _, journey, _ = engine.list_journey(ACCOUNT, customer)
    assert [e.channel for e in journey] == ["phone"]
    assert [r.problems for r in check_store(engine)] == [[]]


def test_the_account_cache_follows_a_repointed_name(engine: IdentityEngine) -> None:
    """Two account ids at the same configuration version: the cache is keyed by id too."""
    from idlink.domain.accounts import Accounts

    engine.put_key_type("first", KeyType("other", NORMALIZER_TRIM))  # created, then changed
    engine.put_key_type("second", KeyType("member", NORMALIZER_TRIM))  # the same version
    cache = Accounts()
    with engine.read_keys() as txn:
        first = cache.find(txn, "first")
        second_id = txn.account_id("second")
        assert first is not None and "member" not in first.key_types
        assert txn.account(first.account_id).config_version() == (
            txn.account(second_id).config_version()
        )
    engine.write_keys(lambda txn: txn.point_account("first", second_id))
    with engine.read_keys() as txn:
        found = cache.find(txn, "first")
    assert found is not None and found.account_id == second_id and "member" in found.key_types
