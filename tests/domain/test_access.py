"""The access use cases the interceptor and the security RPCs call (domain/access.py)."""

from __future__ import annotations

import pytest

from idlink.domain import access
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.erasure import erase_customer
from idlink.domain.profiles import FieldSpec, update_schema
from idlink.errors import NotFound
from idlink.security.audit import AuditFilter, PendingEvent, write_events
from idlink.security.policy import DEFAULT_ANOMALY_MAX_CUSTOMERS, DEFAULT_ANOMALY_WINDOW_SECONDS
from idlink.security.roles import PII_CLEAR_ROLE


def new_key(engine: IdentityEngine, account: str, role: str) -> tuple[str, access.ApiKey]:
    return access.create_api_key(engine, account, role, description="", created_by="test")


def admit(engine: IdentityEngine, token: str, pid: bytes | None = None) -> access.Admission | None:
    return access.admission(engine, token, customer_pid=pid, pii_below=PII_CLEAR_ROLE)


def test_an_unknown_or_revoked_token_admits_nobody(engine):
    assert admit(engine, "idl_not-a-key") is None
    token, key = new_key(engine, "acme", "reader")
    assert admit(engine, token) is not None
    revoked = access.revoke_api_key(engine, "acme", key.key_id)
    assert revoked.revoked_at_us > 0
    assert admit(engine, token) is None
    assert access.key_states(engine, [token]) == {token: None}


def test_a_key_of_an_account_with_no_data_gets_the_defaults(engine):
    token, key = new_key(engine, "empty", "reader")
    found = admit(engine, token, pid=b"\x01" * 16)
    assert found is not None
    assert found.key.key_id == key.key_id
    assert (found.erased, found.pii_fields) == (False, frozenset())
    assert (found.max_customers, found.window_seconds) == (
        DEFAULT_ANOMALY_MAX_CUSTOMERS,
        DEFAULT_ANOMALY_WINDOW_SECONDS,
    )


def test_the_security_policy_sets_the_thresholds_admission_reads(engine):
    token, _ = new_key(engine, "acme", "reader")
    given = access.SecurityPolicy(anomaly_max_customers=7, anomaly_window_seconds=30)
    in_force = access.set_security_policy(engine, "acme", given)
    assert in_force == access.get_security_policy(engine, "acme")
    assert (in_force.anomaly_max_customers, in_force.default_region) == (7, "US")
    found = admit(engine, token)
    assert found is not None and (found.max_customers, found.window_seconds) == (7, 30)
    # An account that does not exist reads the defaults and is not created.
    assert access.get_security_policy(engine, "nobody").anomaly_max_customers == (
        DEFAULT_ANOMALY_MAX_CUSTOMERS
    )
    with engine.read("nobody") as view:
        assert not view.exists


def test_only_roles_that_do_not_see_pii_get_the_pii_field_list(engine):
    reader, _ = new_key(engine, "acme", "reader")
    agent, _ = new_key(engine, "acme", "agent")
    update_schema(engine, "acme", put=[("schema.fields[0]", FieldSpec("ssn", "string", pii=True))])
    as_reader = admit(engine, reader)
    as_agent = admit(engine, agent)
    # The new field, beside the system fields that are PII (first_name, phone_number, ...).
    assert as_reader is not None and "ssn" in as_reader.pii_fields
    assert as_agent is not None and as_agent.pii_fields == frozenset()


def test_a_request_naming_an_erased_customer_is_known_erased(engine):
    token, _ = new_key(engine, "acme", "admin")
    linked = engine.link(
        "acme", RecordInput("crm", "r1", [ContactKey("email", "jane@example.com")], 1)
    )
    other = engine.link(
        "acme", RecordInput("crm", "r2", [ContactKey("email", "joe@example.com")], 1)
    )
    erase_customer(engine, "acme", linked.customer_pid)
    erased = admit(engine, token, pid=linked.customer_pid)
    kept = admit(engine, token, pid=other.customer_pid)
    assert erased is not None and erased.erased
    assert kept is not None and not kept.erased


def test_keys_are_listed_flag_cleared_and_scoped_to_their_account(engine):
    _, first = new_key(engine, "acme", "reader")
    _, second = new_key(engine, "acme", "writer")
    new_key(engine, "other", "admin")
    listed = access.list_api_keys(engine, "acme")
    assert sorted(k.key_id for k in listed) == sorted([first.key_id, second.key_id])
    assert not access.clear_key_flag(engine, "acme", first.key_id).flagged_at_us
    with pytest.raises(NotFound):
        access.revoke_api_key(engine, "other", first.key_id)


def test_audit_events_are_listed_for_their_account_only(engine):
    token, key = new_key(engine, "acme", "reader")
    engine.link("acme", RecordInput("crm", "r1", [ContactKey("email", "a@example.com")], 1))
    events = [
        PendingEvent("acme", key.key_id, "reader", "Resolve", [], "OK"),
        PendingEvent("acme", key.key_id, "reader", "Explain", [], "OK"),
        PendingEvent("nobody", key.key_id, "reader", "Resolve", [], "OK"),  # dropped
    ]
    engine.write_keys(lambda txn: write_events(txn, events))
    listed, last = access.list_audit_events(engine, "acme", AuditFilter(), 0, 10)
    assert [e.method for e in listed] == ["Resolve", "Explain"]
    assert [e.seq for e in listed] == [1, 2] and last == 2
    after, _ = access.list_audit_events(engine, "acme", AuditFilter(), 1, 10)
    assert [e.method for e in after] == ["Explain"]
    assert access.list_audit_events(engine, "nobody", AuditFilter(), 0, 10) == ([], 0)


def test_interleaved_accounts_keep_their_order_and_number_on_across_flushes(engine):
    for account in ("acme", "beta"):
        engine.link(account, RecordInput("crm", "r1", [ContactKey("email", "a@example.com")], 1))

    def event(account: str, method: str) -> PendingEvent:
        return PendingEvent(account, "k", "reader", method, [], "OK")

    first = [event("acme", "A1"), event("beta", "B1"), event("acme", "A2"), event("beta", "B2")]
    engine.write_keys(lambda txn: write_events(txn, first))
    engine.write_keys(lambda txn: write_events(txn, [event("beta", "B3"), event("acme", "A3")]))
    for account, methods in (("acme", ["A1", "A2", "A3"]), ("beta", ["B1", "B2", "B3"])):
        listed, last = access.list_audit_events(engine, account, AuditFilter(), 0, 10)
        assert [(e.seq, e.method) for e in listed] == list(enumerate(methods, 1))
        assert last == 3
