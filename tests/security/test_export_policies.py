"""ExportCustomer gives the contact policies of the customer's contacts as their own section."""

from __future__ import annotations

import datetime as dt
import json

from google.protobuf import field_mask_pb2

from idlink.v1 import admin_pb2, common_pb2, identity_pb2
from tests.security.conftest import auth, link


def contact(type_: str, value: str, source: str = "") -> common_pb2.ContactKey:
    return common_pb2.ContactKey(type=type_, value=value, source=source)


def set_policy(stubs, token: str, account: str, key, **flags: bool) -> str:
    request = identity_pb2.SetContactPolicyRequest(
        account=account,
        contact=key,
        update_mask=field_mask_pb2.FieldMask(paths=sorted(flags)),
        **flags,
    )
    metadata = [*auth(token), ("idlink-actor", "jane")]
    return stubs.identity.SetContactPolicy(request, metadata=metadata, timeout=10).contact_pid


def export(stubs, token: str, account: str, customer_pid: str) -> dict:
    answer = stubs.admin.ExportCustomer(
        admin_pb2.ExportCustomerRequest(account=account, customer_pid=customer_pid),
        metadata=auth(token),
        timeout=10,
    )
    return json.loads(answer.json)


def resolve_pid(stubs, token: str, account: str, key) -> str:
    answer = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=account, contact=key), metadata=auth(token), timeout=10
    )
    return answer.customer.customer_pid


def test_export_has_each_contact_policy_with_who_and_when(stubs, account, tokens) -> None:
    phone, email = contact("phone", "+1 555 123 4567"), contact("email", "Ana@Example.com")
    office = contact("email", "office@example.com")
    crm = contact("id", "C-1", "crm")
    # A policy set before its contact is seen is kept by contact PID (SPEC 2.5).
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crm_pid = set_policy(stubs, tokens["agent"], account, crm, never_isolate=True)
    linked = link(stubs, tokens["writer"], account, "r1", phone, email, crm)
    customer_pid = linked.customer.customer_pid
    link(stubs, tokens["writer"], account, "r2", email, office, seconds=1)
    phone_pid = set_policy(stubs, tokens["agent"], account, phone, never_isolate=True)
    office_pid = set_policy(stubs, tokens["agent"], account, office, do_not_link=True)
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

    exported = export(stubs, tokens["admin"], account, customer_pid)
    policies = exported["contact_policies"]
    assert [p["contact_pid"] for p in policies] == sorted([crm_pid, phone_pid])
    by_pid = {p["contact_pid"]: p for p in policies}
    assert {k: v for k, v in by_pid[phone_pid].items() if k not in ("set_by", "set_at")} == {
        "contact_pid": phone_pid,
        "type": "phone",
        "source": "",
        "value": "+15551234567",
        "do_not_link": False,
        "never_isolate": True,
    }
    assert by_pid[crm_pid]["type"] == "id" and by_pid[crm_pid]["source"] == "crm"
    assert by_pid[crm_pid]["value"] == "C-1" and by_pid[crm_pid]["never_isolate"] is True
    for policy in policies:
        assert "jane" in policy["set_by"]
        assert before <= dt.datetime.fromisoformat(policy["set_at"]) <= after
    # The do-not-link mailbox is a customer of its own, and its export has that policy.
    office_customer = resolve_pid(stubs, tokens["admin"], account, office)
    assert office_customer != customer_pid
    (mailbox,) = export(stubs, tokens["admin"], account, office_customer)["contact_policies"]
    assert mailbox["contact_pid"] == office_pid
    assert (mailbox["value"], mailbox["do_not_link"], mailbox["never_isolate"]) == (
        "office@example.com",
        True,
        False,
    )


def test_a_cleared_policy_leaves_the_export(stubs, account, tokens) -> None:
    phone = contact("phone", "+44 20 7946 0958")
    linked = link(stubs, tokens["writer"], account, "r1", phone, contact("email", "b@x.example"))
    customer_pid = linked.customer.customer_pid
    set_policy(stubs, tokens["agent"], account, phone, never_isolate=True)
    assert len(export(stubs, tokens["admin"], account, customer_pid)["contact_policies"]) == 1
    set_policy(stubs, tokens["agent"], account, phone, never_isolate=False)
    assert export(stubs, tokens["admin"], account, customer_pid)["contact_policies"] == []
