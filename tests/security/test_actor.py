"""Who did it: history, manual records and the audit name the authenticated key (SPEC 3.7, 8).

``idlink-actor`` metadata is what a client says about the person behind a
call; nothing checks it. It is kept beside the key, quoted and labelled as
asserted, and never stands in for the key.
"""

from __future__ import annotations

import json

from idlink.v1 import admin_pb2, common_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key

from .conftest import auth, link


def _key(stubs, admin_token, account, role):
    made = stubs.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(account=account, role=role), metadata=auth(admin_token)
    )
    return made.key.key_id, made.token


def _history(stubs, token, account, customer_pid):
    return stubs.identity.GetCustomerHistory(
        identity_pb2.GetCustomerHistoryRequest(account=account, customer_pid=customer_pid),
        metadata=auth(token),
    ).events


def test_history_names_the_key_and_labels_the_asserted_name(stubs, account, tokens):
    key_id, token = _key(stubs, tokens["admin"], account, admin_pb2.ROLE_WRITER)
    request = identity_pb2.LinkRequest(
        account=account, source="crm", record_id="r1", contacts=[key("phone", "+15553000001")]
    )
    claimed = [*auth(token), ("idlink-actor", "admin:chief-security-officer")]
    linked = stubs.identity.Link(request, metadata=claimed)
    events = _history(stubs, tokens["admin"], account, linked.customer.customer_pid)
    assert [e.actor for e in events] == [
        f'key:{key_id} (writer, asserted: "admin:chief-security-officer")'
    ]

    plain = stubs.identity.Link(
        identity_pb2.LinkRequest(
            account=account, source="crm", record_id="r2", contacts=[key("email", "p@x.com")]
        ),
        metadata=auth(token),
    )
    events = _history(stubs, tokens["admin"], account, plain.customer.customer_pid)
    assert [e.actor for e in events] == [f"key:{key_id} (writer)"]


def test_an_asserted_name_cannot_pass_for_a_key(stubs, account, tokens):
    key_id, token = _key(stubs, tokens["admin"], account, admin_pb2.ROLE_WRITER)
    forged = 'x") (admin'
    linked = stubs.identity.Link(
        identity_pb2.LinkRequest(
            account=account, source="crm", record_id="r1", contacts=[key("phone", "+15553000011")]
        ),
        metadata=[*auth(token), ("idlink-actor", forged)],
    )
    (event,) = _history(stubs, tokens["admin"], account, linked.customer.customer_pid)
    # Quoted and escaped: the name cannot close the label and pose as a role.
    assert event.actor == f'key:{key_id} (writer, asserted: "x\\") (admin")'


def test_merge_author_change_feed_and_audit_name_the_key(stubs, account, tokens):
    key_id, token = _key(stubs, tokens["admin"], account, admin_pb2.ROLE_AGENT)
    merged = stubs.identity.MergeKeys(
        identity_pb2.MergeKeysRequest(
            account=account, contacts=[key("phone", "+15553000021"), key("email", "m@x.com")]
        ),
        metadata=[*auth(token), ("idlink-actor", "jane")],
    )
    expected = f'key:{key_id} (agent, asserted: "jane")'
    exported = json.loads(
        stubs.admin.ExportCustomer(
            admin_pb2.ExportCustomerRequest(
                account=account, customer_pid=merged.customer.customer_pid
            ),
            metadata=auth(tokens["admin"]),
        ).json
    )
    assert [r["author"] for r in exported["records"] if r["source"] == "manual"] == [expected]
    assert {e["actor"] for e in exported["history"]} == {expected}
    feed = stubs.profile.WatchChanges(
        profile_pb2.WatchChangesRequest(account=account),
        metadata=auth(tokens["admin"]),
        timeout=5,
    )
    try:
        first = next(iter(feed))
    finally:
        feed.cancel()
    assert {e.actor for e in first.events} == {expected}
    audit = stubs.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(account=account, key_id=key_id),
        metadata=auth(tokens["admin"]),
    )
    assert [(e.method, e.role) for e in audit.events] == [
        ("/idlink.v1.IdentityService/MergeKeys", "agent")
    ]


def test_admin_changes_name_the_admin_key(stubs, account, tokens):
    customer = link(stubs, tokens["admin"], account, "r1", key("phone", "+15553000031")).customer
    key_id, token = _key(stubs, tokens["admin"], account, admin_pb2.ROLE_ADMIN)
    erased = stubs.admin.EraseCustomer(
        admin_pb2.EraseCustomerRequest(account=account, customer_pid=customer.customer_pid),
        metadata=[*auth(token), ("idlink-actor", "dpo")],
    )
    assert erased.contacts_erased == 1
    feed = stubs.profile.WatchChanges(
        profile_pb2.WatchChangesRequest(account=account),
        metadata=auth(tokens["admin"]),
        timeout=5,
    )
    try:
        events = [e for e in next(iter(feed)).events if e.kind == common_pb2.CHANGE_KIND_ERASED]
    finally:
        feed.cancel()
    assert [e.actor for e in events] == [f'key:{key_id} (admin, asserted: "dpo")']
