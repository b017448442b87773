"""The engine's behaviour, in the words and examples of SPEC sections 2, 3, 6 and 7."""

from __future__ import annotations

import pytest

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_EMAIL, NORMALIZER_TRIM, AccountPolicy, KeyType
from idlink.domain.linking import APPLIED, CAPPED, CONFLICT
from idlink.domain.unit import AccountUnit
from idlink.domain.views import CREATED, FOUND, INVALID, NOT_FOUND, NOT_LINKABLE
from idlink.errors import FailedPrecondition, InvalidArgument, NotFound

A = "acme"


def phone(v: str) -> ContactKey:
    return ContactKey("phone", v)


def email(v: str) -> ContactKey:
    return ContactKey("email", v)


def device(v: str) -> ContactKey:
    return ContactKey("device", v)


def crm(v: str, source: str = "salesforce") -> ContactKey:
    return ContactKey("id", v, source)


def rec(rid: str, *contacts: ContactKey, at: int, source: str = "crm") -> RecordInput:
    return RecordInput(source, rid, list(contacts), at)


def customer_of(engine: IdentityEngine, key: ContactKey) -> bytes:
    answer = engine.resolve(A, key)
    assert answer.customer is not None, answer
    return answer.customer.pid


def test_differently_formatted_contacts_are_one_contact(engine):
    engine.link(A, rec("1", phone("+1 (555) 123-4567"), email("John.Smith@company.com"), at=1))
    a = engine.resolve(A, phone("+15551234567"))
    b = engine.resolve(A, email("john.smith@company.com"))
    assert a.status == b.status == FOUND
    assert a.customer.pid == b.customer.pid
    assert {c.value for c in a.customer.contacts} == {"+15551234567", "john.smith@company.com"}


def test_phone_with_and_without_country_code_never_link_but_suggest(engine):
    engine.link(A, rec("1", phone("+1 555 123 4567"), email("carmen@company.com"), at=1))
    answer = engine.resolve(A, phone("(555) 123-4567"))
    assert answer.status == NOT_FOUND
    assert [s.reason.split(":")[0] for s in answer.suggestions] == ["NATIONAL_NUMBER"]
    assert answer.suggestions[0].customer_pid == customer_of(engine, email("carmen@company.com"))


def test_source_scoped_ids_from_two_sources_are_two_contacts(engine):
    engine.link(A, rec("1", crm("1234", "zendesk"), email("a@x.com"), at=1))
    engine.link(A, rec("2", crm("1234", "salesforce"), email("b@x.com"), at=2))
    assert customer_of(engine, email("a@x.com")) != customer_of(engine, email("b@x.com"))


def test_same_contact_in_two_accounts_has_two_pids(engine):
    one = engine.resolve("one", email("a@x.com"), create_if_missing=True)
    two = engine.resolve("two", email("a@x.com"), create_if_missing=True)
    assert one.status == two.status == CREATED
    assert one.contact_pid != two.contact_pid
    assert engine.resolve("one", email("a@x.com")).status == FOUND


def test_invalid_contact_is_stored_but_never_links(engine):
    result = engine.link(A, rec("1", phone("12345"), email("ok@x.com"), at=1))
    assert result.outcome == APPLIED
    answer = engine.resolve(A, phone("12345"))
    assert answer.status == INVALID and answer.reason == "PHONE_LENGTH"
    assert answer.customer.pid != customer_of(engine, email("ok@x.com"))


def test_blocked_values_never_link(engine):
    engine.put_key_type(A, KeyType("email", NORMALIZER_EMAIL, blocked_patterns=(r"^noemail@",)))
    engine.link(A, rec("1", phone("+14155550001"), email("noemail@x.com"), at=1))
    engine.link(A, rec("2", phone("+14155550002"), email("noemail@x.com"), at=2))
    engine.link(A, rec("3", phone("+14155550003"), phone("1111111"), at=3))
    assert customer_of(engine, phone("+14155550001")) != customer_of(engine, phone("+14155550002"))
    assert engine.resolve(A, email("noemail@x.com")).reason == "BLOCKED"
    assert engine.resolve(A, phone("1111111")).reason == "BLOCKED"


def test_placeholder_email_is_isolated_not_merged(engine):
    rows = [
        rec(f"r{i}", phone(f"+1415555{i:04d}"), email("no@email.com"), at=i) for i in range(2000)
    ]
    engine.ingest(A, rows)
    partition = engine.partition(A)
    assert len(partition) == 2001
    assert max(len(c) for c in partition) == 1
    answer = engine.resolve(A, email("no@email.com"))
    assert answer.status == NOT_LINKABLE
    assert answer.reason.startswith("ISOLATED")
    assert [c.value for c in engine.list_isolated(A)] == ["no@email.com"]
    assert sorted(map(sorted, partition)) == sorted(map(sorted, engine.rebuild_partition(A)))


def test_placeholder_isolated_the_same_when_rows_arrive_one_by_one_in_reverse(engine):
    for i in reversed(range(150)):
        engine.link(A, rec(f"r{i}", phone(f"+1415555{i:04d}"), email("no@email.com"), at=i))
    assert max(len(c) for c in engine.partition(A)) == 1
    assert engine.resolve(A, email("no@email.com")).status == NOT_LINKABLE


def test_cap_refuses_link_when_nobody_qualifies_for_isolation(engine):
    engine.set_account_policy(A, AccountPolicy(max_contacts=3, isolate_min_connections=10))
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), email("c@x.com"), at=1))
    result = engine.link(A, rec("2", email("c@x.com"), email("d@x.com"), at=2))
    assert result.outcome == CAPPED
    assert customer_of(engine, email("d@x.com")) != customer_of(engine, email("a@x.com"))
    assert any(r.startswith("CAPPED") for r in engine.explain(A, email("d@x.com")).reasons)


def test_never_isolate_makes_the_cap_refuse_instead(engine):
    engine.set_account_policy(A, AccountPolicy(max_contacts=3, isolate_min_connections=2))
    engine.set_contact_policy(A, email("hub@x.com"), never_isolate=True)
    for i in range(4):
        engine.link(A, rec(f"r{i}", email("hub@x.com"), phone(f"+1415555000{i}"), at=i))
    assert engine.resolve(A, email("hub@x.com")).status == FOUND
    assert len(engine.resolve(A, email("hub@x.com")).customer.contacts) == 3


def test_anonymous_device_that_later_logs_in_joins_the_known_customer(engine):
    answer = engine.resolve(A, device("browser-1"), create_if_missing=True)
    assert answer.status == CREATED and answer.customer.anonymous
    engagement = engine.record_engagement(
        A, device("browser-1"), occurred_at_us=10, channel="web", summary="browsed pricing"
    )
    engine.link(A, rec("1", email("known@x.com"), phone("+14155550100"), at=1))
    engine.link(A, rec("login", device("browser-1"), email("known@x.com"), at=20, source="web"))
    known = engine.resolve(A, email("known@x.com")).customer
    assert not known.anonymous
    assert {c.value for c in known.contacts} >= {"browser-1", "known@x.com"}
    _, page, _ = engine.list_journey(A, known.pid)
    assert [e.engagement_id for e in page] == [engagement.engagement_id]


def test_shared_device_moves_to_whoever_used_it_last(engine):
    engine.put_key_type(A, KeyType("email", NORMALIZER_EMAIL, max_per_customer=1))
    engine.link(A, rec("1", email("ann@x.com"), phone("+14155550001"), at=1))
    engine.link(A, rec("2", email("ann@x.com"), device("tablet"), at=2))
    result = engine.link(A, rec("3", email("bob@x.com"), device("tablet"), at=3))
    assert result.outcome == APPLIED
    ann = engine.resolve(A, email("ann@x.com")).customer
    bob = engine.resolve(A, email("bob@x.com")).customer
    assert {c.value for c in bob.contacts} == {"bob@x.com", "tablet"}
    assert {c.value for c in ann.contacts} == {"ann@x.com", "+14155550001"}
    moved = engine.resolve(A, device("tablet"))
    assert [s.customer_pid for s in moved.suggestions] == [ann.pid]


def test_key_limit_conflict_is_reported_and_not_applied(engine):
    engine.put_key_type(A, KeyType("email", NORMALIZER_EMAIL, max_per_customer=1))
    engine.link(A, rec("1", email("ann@x.com"), phone("+14155550001"), at=1))
    engine.link(A, rec("2", email("bob@x.com"), phone("+14155550002"), at=2))
    result = engine.link(A, rec("3", phone("+14155550001"), phone("+14155550002"), at=3))
    assert result.outcome == CONFLICT
    ann = customer_of(engine, email("ann@x.com"))
    bob = customer_of(engine, email("bob@x.com"))
    assert ann != bob
    assert set(result.conflict_customer_pids) == {ann, bob}


def test_merge_keeps_the_oldest_pid_and_old_pids_redirect(engine):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    oldest = customer_of(engine, email("a@x.com"))
    engine.link(A, rec("2", email("b@x.com"), at=2))
    younger = customer_of(engine, email("b@x.com"))
    result = engine.merge_keys(A, [email("b@x.com"), email("a@x.com")], actor="agent-7")
    assert result.customer_pid == oldest
    redirected = engine.get_customer(A, younger)
    assert redirected.pid == oldest and redirected.redirected_from == younger
    kinds = [e.kind for e in engine.history(A, oldest)]
    assert "merged" in kinds
    assert engine.history(A, oldest)[-1].actor == "agent-7"


def test_merge_fills_profile_gaps_and_joins_labels(engine, store):
    from idlink.domain.pids import merge_profile
    from idlink.store.txn import Profile

    survivor = Profile(attributes={"first_name": b"Ann"}, labels=["VIP"])
    other = Profile(attributes={"first_name": b"Anna", "city": b"Oslo"}, labels=["debtor", "VIP"])
    merge_profile(survivor, other)
    assert dict(survivor.attributes) == {"first_name": b"Ann", "city": b"Oslo"}
    assert list(survivor.labels) == ["VIP", "debtor"]


def test_replacing_a_record_splits_and_earliest_contact_keeps_the_pid(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), email("c@x.com"), at=2))
    before = customer_of(engine, email("a@x.com"))
    engine.link(A, rec("2", email("c@x.com"), email("d@x.com"), at=2))
    assert customer_of(engine, email("a@x.com")) == before
    split = engine.get_customer(A, customer_of(engine, email("c@x.com")))
    assert split.pid != before and split.split_from == before
    assert {c.value for c in split.contacts} == {"c@x.com", "d@x.com"}


def test_same_record_sent_again_changes_nothing(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    seq = len(engine.changes_after(A, 0))
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    assert len(engine.changes_after(A, 0)) == seq


def test_unmerge_by_deleting_the_manual_record(engine, store):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), at=2))
    engine.merge_keys(A, [email("a@x.com"), email("b@x.com")], actor="agent")
    merged = customer_of(engine, email("a@x.com"))
    assert customer_of(engine, email("b@x.com")) == merged
    explanation = engine.explain(A, email("a@x.com"), email("b@x.com"))
    assert explanation.linked and explanation.hops[0].source == "manual"
    engine.delete_record(A, "manual", explanation.hops[0].record_id)
    assert customer_of(engine, email("a@x.com")) == merged
    assert customer_of(engine, email("b@x.com")) != merged


def test_do_not_link_splits_and_can_be_set_before_the_contact_is_seen(engine):
    engine.set_contact_policy(A, email("support@company.com"), do_not_link=True)
    engine.link(A, rec("1", email("support@company.com"), phone("+14155550001"), at=1))
    engine.link(A, rec("2", email("support@company.com"), phone("+14155550002"), at=2))
    answer = engine.resolve(A, email("support@company.com"))
    assert answer.status == NOT_LINKABLE
    assert len(answer.suggestions) == 2
    engine.set_contact_policy(A, email("support@company.com"), do_not_link=False)
    assert len(engine.resolve(A, email("support@company.com")).customer.contacts) == 3
    engine.set_contact_policy(A, email("support@company.com"), do_not_link=True)
    assert len(engine.resolve(A, phone("+14155550001")).customer.contacts) == 1


def test_explain_gives_the_chain_of_records(engine):
    engine.link(A, rec("1", email("a@x.com"), phone("+14155550001"), at=1))
    engine.link(A, rec("2", phone("+14155550001"), crm("C-1"), at=2, source="desk"))
    explanation = engine.explain(A, email("a@x.com"), crm("C-1"))
    assert explanation.linked
    assert [(h.source, h.record_id) for h in explanation.hops] == [("crm", "1"), ("desk", "2")]


def test_preview_counts_merges_and_splits_without_applying(engine):
    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    engine.link(A, rec("2", email("c@x.com"), crm("C-1"), at=2))
    preview = engine.preview(A, key_type=KeyType("email", NORMALIZER_EMAIL, max_per_customer=1))
    assert preview.splits == 1 and preview.merges == 0
    assert len(engine.resolve(A, email("a@x.com")).customer.contacts) == 2
    with pytest.raises(FailedPrecondition):
        engine.preview(A, key_type=KeyType("email", NORMALIZER_TRIM))


def test_journey_follows_contacts_and_pins(engine):
    engine.link(A, rec("1", email("a@x.com"), phone("+14155550001"), at=1))
    engine.link(A, rec("2", email("z@x.com"), at=1))
    e1 = engine.record_engagement(A, email("a@x.com"), occurred_at_us=30, channel="email")
    e2 = engine.record_engagement(A, phone("+14155550001"), occurred_at_us=10, channel="voice")
    e3 = engine.record_engagement(A, phone("+14155550001"), occurred_at_us=20, channel="sms")
    customer = customer_of(engine, email("a@x.com"))
    other = customer_of(engine, email("z@x.com"))
    _, page, token = engine.list_journey(A, customer, page_size=2)
    assert [e.engagement_id for e in page] == [e2.engagement_id, e3.engagement_id]
    _, rest, end = engine.list_journey(A, customer, page_size=2, page_token=token)
    assert [e.engagement_id for e in rest] == [e1.engagement_id] and end == ""
    engine.relink_engagement(A, e3.engagement_id, other, actor="agent")
    _, page, _ = engine.list_journey(A, customer)
    assert e3.engagement_id not in [e.engagement_id for e in page]
    # the pin survives a later merge of the pinned customer
    engine.link(A, rec("3", email("z@x.com"), email("y@x.com"), at=5))
    engine.link(A, rec("0", email("y@x.com"), at=0))
    _, page, _ = engine.list_journey(A, customer_of(engine, email("z@x.com")))
    assert [e.engagement_id for e in page] == [e3.engagement_id]


def test_change_feed_numbers_every_change(engine):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), at=2))
    engine.merge_keys(A, [email("a@x.com"), email("b@x.com")])
    events = engine.changes_after(A, 0)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events] == ["created", "created", "merged"]
    assert engine.changes_after(A, 2)[0].kind == "merged"


def test_bad_input_is_refused_with_the_field_named(engine):
    with pytest.raises(InvalidArgument) as info:
        engine.link(A, RecordInput("crm", "1", [], 1))
    assert info.value.field == "records[0].contacts"
    with pytest.raises(InvalidArgument) as info:
        engine.link(A, rec("1", ContactKey("fax", "1"), at=1))
    assert info.value.field == "records[0].contacts[0].type"
    with pytest.raises(InvalidArgument) as info:
        engine.link(A, rec("1", ContactKey("id", "1", ""), at=1))
    assert info.value.field == "records[0].contacts[0].source"
    with pytest.raises(InvalidArgument):
        engine.link("", rec("1", email("a@x.com"), at=1))
    with pytest.raises(NotFound):
        engine.delete_record(A, "crm", "missing")
    assert engine.partition(A) == []


def test_a_failed_operation_leaves_nothing_half_written(engine):
    engine.link(A, rec("1", email("a@x.com"), at=1))
    before = engine.partition(A), engine.changes_after(A, 0)
    with pytest.raises(InvalidArgument):
        engine.ingest(A, [rec("2", email("b@x.com"), at=2), rec("3", ContactKey("fax", "x"), at=3)])
    assert (engine.partition(A), engine.changes_after(A, 0)) == before


def test_a_batch_is_one_operation_for_customer_pids(engine):
    """SPEC 3.5: PIDs go to heirs of the customers as they were before the batch.

    A batch applies its newest records first and replays the late ones after;
    the PIDs must not follow the state in between.
    """
    engine.put_key_type(A, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))
    engine.link(A, rec("1", email("a@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), at=2))
    x, y = customer_of(engine, email("a@x.com")), customer_of(engine, email("b@x.com"))
    seq = len(engine.changes_after(A, 0))
    results = engine.ingest(
        A,
        [
            rec("3", email("a@x.com"), email("b@x.com"), at=3),  # newest: would merge x and y
            rec("0a", email("a@x.com"), ContactKey("member", "M1"), at=0),  # late
            rec("0b", email("b@x.com"), ContactKey("member", "M2"), at=0),  # late
        ],
    )
    assert [r.outcome for r in results] == [CONFLICT, APPLIED, APPLIED]
    # Nobody merged, so both keep their PIDs: y is no redirect to x.
    assert customer_of(engine, email("a@x.com")) == x
    assert customer_of(engine, email("b@x.com")) == y
    assert engine.get_customer(A, y).redirected_from == b""
    assert {e.kind for e in engine.changes_after(A, seq)} == {"updated"}


def test_a_contact_new_in_a_batch_is_no_part_of_a_customer_it_only_met_in_between(engine):
    engine.set_account_policy(A, AccountPolicy(max_contacts=3, isolate_min_connections=3))
    engine.link(A, rec("0", phone("+14155550001"), at=0))
    x = customer_of(engine, phone("+14155550001"))
    engine.ingest(
        A,
        [
            rec("0", phone("+14155550001"), phone("+14155550003"), email("ann@x.com"), at=0),
            rec("1", phone("+14155550001"), phone("+14155550002"), at=1),
        ],
    )
    assert engine.resolve(A, phone("+14155550001")).status == NOT_LINKABLE  # isolated
    assert customer_of(engine, phone("+14155550001")) == x
    alone = engine.get_customer(A, customer_of(engine, phone("+14155550002")))
    assert [c.value for c in alone.contacts] == ["+14155550002"]
    assert alone.split_from == b""  # it was new: it split from nothing
    added = [e for e in engine.changes_after(A, 0) if e.customer_pid == x]
    assert all(alone.contacts[0].pid not in e.contacts_added for e in added)


def test_check_finds_isolation_or_first_seen_keys_a_rebuild_contradicts(engine):
    from idlink.domain.check import check_account
    from idlink.store import codec

    engine.link(A, rec("1", email("a@x.com"), email("b@x.com"), at=1))
    engine.link(A, rec("2", email("b@x.com"), email("c@x.com"), at=2))
    assert check_account(engine, A).ok
    account_id = engine.account_config(A).account_id

    def tamper(txn) -> None:
        scoped = txn.account(account_id)
        for pid, contact in list(scoped.iter_contacts()):
            if contact.value == "c@x.com":
                contact.first_key = codec.canonical_key(1, "crm", "1")
                scoped.put_contact(pid, contact)

    engine.store.write(tamper)
    problems = check_account(engine, A).problems
    assert len(problems) == 1 and "first seen elsewhere than a rebuild says" in problems[0]


def test_records_in_time_order_are_applied_without_a_replay(engine, monkeypatch):
    """The fast path (docs/design.md): a record newer than all its customers have seen
    is applied at once; an older one replays its region. Both give the same customers."""
    replayed: list[int] = []
    original = AccountUnit.replay

    def counted(self, region):
        replayed.append(len(region.records))
        return original(self, region)

    monkeypatch.setattr(AccountUnit, "replay", counted)
    engine.link(A, rec("r1", email("a@example.com"), phone("+14155550001"), at=10))
    engine.link(A, rec("r2", email("b@example.com"), at=20))
    engine.link(A, rec("r3", phone("+14155550001"), email("b@example.com"), at=30))  # a merge
    engine.ingest(
        A,
        [rec("r4", email("a@example.com"), at=40), rec("r5", email("c@example.com"), at=41)],
    )
    assert replayed == []
    assert customer_of(engine, email("a@example.com")) == customer_of(
        engine, email("b@example.com")
    )
    # Older than the newest record of a@'s customer: its region (r1 to r4 and itself) replays.
    engine.link(A, rec("r0", email("a@example.com"), email("d@example.com"), at=5))
    assert replayed == [5]
    assert customer_of(engine, email("d@example.com")) == customer_of(
        engine, email("b@example.com")
    )


def test_a_late_record_naming_an_isolated_placeholder_is_applied_at_once(engine, monkeypatch):
    engine.set_account_policy(A, AccountPolicy(6, 3))  # a cap of 6 contacts: isolated soon
    rows = [
        rec(f"r{i}", phone(f"+1415555{i:04d}"), email("no@email.com"), at=100 + i)
        for i in range(40)
    ]
    engine.ingest(A, rows)
    assert engine.resolve(A, email("no@email.com")).reason.startswith("ISOLATED")
    replayed: list[int] = []
    original = AccountUnit.replay
    monkeypatch.setattr(
        AccountUnit, "replay", lambda self, region: replayed.append(1) or original(self, region)
    )
    # Older than the placeholder's newest record but after its isolation, and a new person.
    engine.link(A, rec("late", phone("+14155559999"), email("no@email.com"), at=130))
    assert replayed == []
    assert sorted(map(sorted, engine.partition(A))) == sorted(
        map(sorted, engine.rebuild_partition(A))
    )
