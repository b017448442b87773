"""AdminService through a real server: key types, policy, isolated contacts (SPEC 2.4, 2.5, 3.3)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import admin_pb2, common_pb2, identity_pb2
from tests.helpers import resolve
from tests.service.conftest import key

from .conftest import error_details

A = admin_pb2


def test_a_new_account_lists_the_default_key_types(client, account):
    listed = client.admin.ListKeyTypes(A.ListKeyTypesRequest(account=account))
    types = {k.name: k for k in listed.key_types}
    assert sorted(types) == ["device", "email", "id", "phone"]
    assert types["phone"].normalizer == common_pb2.NORMALIZER_PHONE
    assert types["id"].source_scoped
    assert types["device"].reassignable and types["device"].anonymous
    assert types["phone"].blocked_patterns


def test_put_key_type_with_blocked_values_and_paging(client, account):
    stored = client.admin.PutKeyType(
        A.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(
                name="membership_id",
                normalizer=common_pb2.NORMALIZER_TRIM,
                max_per_customer=1,
                blocked_values=["null"],
                blocked_patterns=["^0+$"],
            ),
        )
    )
    assert stored.name == "membership_id" and list(stored.blocked_values) == ["null"]
    assert resolve(client, account, key("membership_id", " null ")).reason == "BLOCKED"
    assert resolve(client, account, key("membership_id", "000")).reason == "BLOCKED"
    assert resolve(client, account, key("membership_id", "M-1")).status == (
        identity_pb2.RESOLVE_STATUS_NOT_FOUND
    )

    names, token = [], ""
    while True:
        page = client.admin.ListKeyTypes(
            A.ListKeyTypesRequest(account=account, page_size=2, page_token=token)
        )
        assert len(page.key_types) <= 2
        names.extend(k.name for k in page.key_types)
        token = page.next_page_token
        if not token:
            break
    assert names == ["device", "email", "id", "membership_id", "phone"]


def test_put_key_type_errors(client, account):
    with pytest.raises(grpc.RpcError) as caught:
        client.admin.PutKeyType(
            A.PutKeyTypeRequest(account=account, key_type=common_pb2.KeyType(name="Bad Name"))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)["idlink-error-field"] == "key_type.name"
    with pytest.raises(grpc.RpcError) as caught:
        client.admin.PutKeyType(
            A.PutKeyTypeRequest(
                account=account,
                key_type=common_pb2.KeyType(name="x", blocked_patterns=["(unclosed"]),
            )
        )
    assert error_details(caught.value)["idlink-error-field"] == "key_type.blocked_patterns"
    # A type in use cannot change its normaliser.
    client.identity.Resolve(
        identity_pb2.ResolveRequest(
            account=account, contact=key("email", "u@x.com"), create_if_missing=True
        )
    )
    with pytest.raises(grpc.RpcError) as caught:
        client.admin.PutKeyType(
            A.PutKeyTypeRequest(
                account=account,
                key_type=common_pb2.KeyType(name="email", normalizer=common_pb2.NORMALIZER_TRIM),
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value)["idlink-error-reason"] == "KEY_TYPE_IN_USE"


def test_account_policy_defaults_and_changes(client, account):
    policy = client.admin.GetAccountPolicy(A.GetAccountPolicyRequest(account=account))
    assert (policy.max_contacts, policy.isolate_min_connections) == (100, 20)
    stored = client.admin.SetAccountPolicy(
        A.SetAccountPolicyRequest(account=account, policy=common_pb2.AccountPolicy(max_contacts=50))
    )
    assert (stored.max_contacts, stored.isolate_min_connections) == (50, 20)
    with pytest.raises(grpc.RpcError) as caught:
        client.admin.SetAccountPolicy(
            A.SetAccountPolicyRequest(
                account=account, policy=common_pb2.AccountPolicy(max_contacts=1)
            )
        )
    assert error_details(caught.value)["idlink-error-field"] == "policy.max_contacts"
    assert (
        client.admin.GetAccountPolicy(A.GetAccountPolicyRequest(account=account)).max_contacts == 50
    )


def test_placeholder_email_is_isolated_not_merged(client, account):
    """SPEC 3.3: 2,000 CRM rows with distinct phones and no@email.com."""
    rows = 2000
    requests = [
        identity_pb2.IngestRequest(
            account=account,
            seq=seq,
            records=[
                identity_pb2.Record(
                    source="crm",
                    record_id=str(i),
                    contacts=[key("phone", f"+1 212 55{i:05d}"), key("email", "no@email.com")],
                    observed_at=Timestamp(seconds=1_700_000_000 + i),
                )
                for i in range(start, start + 500)
            ],
        )
        for seq, start in enumerate(range(0, rows, 500), start=1)
    ]
    acks = list(client.identity.Ingest(iter(requests)))
    assert acks[-1].committed_seq == 4
    placeholder = resolve(client, account, key("email", "no@email.com"))
    assert placeholder.status == identity_pb2.RESOLVE_STATUS_NOT_LINKABLE
    assert placeholder.reason.startswith("ISOLATED")
    for i in (0, 999, 1999):
        phone = resolve(client, account, key("phone", f"+1 212 55{i:05d}"))
        assert phone.status == identity_pb2.RESOLVE_STATUS_FOUND
        assert len(phone.customer.contacts) == 1

    listed = client.admin.ListIsolatedContacts(A.ListIsolatedContactsRequest(account=account))
    assert [c.value for c in listed.contacts] == ["no@email.com"]
    assert listed.contacts[0].reason == "ISOLATED" and not listed.contacts[0].linkable
    assert listed.contacts[0].connections >= 20
    assert not listed.next_page_token


def test_isolated_contacts_are_paged(client, account):
    client.admin.SetAccountPolicy(
        A.SetAccountPolicyRequest(
            account=account,
            policy=common_pb2.AccountPolicy(max_contacts=3, isolate_min_connections=2),
        )
    )
    hubs = [f"hub{h}@x.com" for h in range(3)]
    n = 0
    for h, hub in enumerate(hubs):
        for i in range(4):
            n += 1
            client.identity.Link(
                identity_pb2.LinkRequest(
                    account=account,
                    source="crm",
                    record_id=f"{h}-{i}",
                    contacts=[key("email", hub), key("phone", f"+1555700{n:04d}")],
                    observed_at=Timestamp(seconds=1_700_000_000 + n),
                )
            )
    found, token = [], ""
    while True:
        page = client.admin.ListIsolatedContacts(
            A.ListIsolatedContactsRequest(account=account, page_size=2, page_token=token)
        )
        found.extend(c.value for c in page.contacts)
        token = page.next_page_token
        if not token:
            break
    assert sorted(found) == hubs
    with pytest.raises(grpc.RpcError) as caught:
        client.admin.ListIsolatedContacts(
            A.ListIsolatedContactsRequest(account=account, page_token="eHg6eHg")
        )
    assert error_details(caught.value)["idlink-error-field"] == "page_token"


def test_key_type_priority_is_validated_listed_and_previewed(client, account):
    """SPEC 3.8: key-type priority ranks contacts; 0 means the type's default."""
    listed = client.admin.ListKeyTypes(A.ListKeyTypesRequest(account=account))
    assert {k.name: k.priority for k in listed.key_types} == {
        "id": 10,
        "email": 20,
        "phone": 30,
        "device": 40,
    }
    crm_id = common_pb2.KeyType(name="crm_id", max_per_customer=1)
    stored = client.admin.PutKeyType(A.PutKeyTypeRequest(account=account, key_type=crm_id))
    assert stored.priority == 50  # an added type comes after the built-in ones

    with pytest.raises(grpc.RpcError) as caught:
        client.admin.PutKeyType(
            A.PutKeyTypeRequest(
                account=account,
                key_type=common_pb2.KeyType(name="crm_id", max_per_customer=1, priority=1_000_001),
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)["idlink-error-field"] == "key_type.priority"

    # MXO use case 9: with the default order the CRM id C-2 is the refused link.
    def link(record_id, seconds, *contacts):
        return client.identity.Link(
            identity_pb2.LinkRequest(
                account=account,
                source="crm",
                record_id=record_id,
                contacts=list(contacts),
                observed_at=Timestamp(seconds=1_700_000_000 + seconds),
            )
        )

    link("a", 1, key("email", "emma@er.com"), key("crm_id", "C-1"))
    link("b", 2, key("phone", "+447700900123"))
    third = link(
        "c", 3, key("crm_id", "C-2"), key("phone", "+447700900123"), key("email", "emma@er.com")
    )
    assert third.outcome == common_pb2.RECORD_OUTCOME_CONFLICT
    merged = resolve(client, account, key("email", "emma@er.com")).customer
    assert sorted(c.value for c in merged.contacts) == ["+447700900123", "C-1", "emma@er.com"]

    first_ids = common_pb2.KeyType(name="crm_id", max_per_customer=1, priority=5)
    preview = client.identity.PreviewConfigChange(
        identity_pb2.PreviewConfigChangeRequest(account=account, key_type=first_ids)
    )
    assert (preview.merges, preview.splits) == (1, 1)
    assert list(preview.split_customer_pids) == [merged.customer_pid]
    assert resolve(client, account, key("email", "emma@er.com")).customer == merged

    stored = client.admin.PutKeyType(A.PutKeyTypeRequest(account=account, key_type=first_ids))
    assert stored.priority == 5
    listed = client.admin.ListKeyTypes(A.ListKeyTypesRequest(account=account))
    assert {k.name: k.priority for k in listed.key_types}["crm_id"] == 5
    # The change replayed the account: C-2 now anchors the record and keeps the phone.
    # Contacts are listed in the contact order: crm_id (5) before phone (30).
    refused = resolve(client, account, key("crm_id", "C-2")).customer
    assert [c.value for c in refused.contacts] == ["C-2", "+447700900123"]
