"""Page tokens are opaque and bound to their request (AIP-158).

A history token of customer A does not page the history of customer B, a
token of one account or list is refused by another, and a token is refused
with INVALID_ARGUMENT naming page_token, never answered with another list.
"""

from __future__ import annotations

import base64

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import admin_pb2, identity_pb2
from tests.service.conftest import error_details, key


def link(client, account, record_id, *contacts, seconds=0):
    return client.identity.Link(
        identity_pb2.LinkRequest(
            account=account,
            source="crm",
            record_id=record_id,
            contacts=list(contacts),
            observed_at=Timestamp(seconds=1_700_000_000 + seconds),
        )
    )


def customer_with_history(client, account, name: str) -> str:
    """A customer of ``account`` with at least three history events."""
    phone = key("phone", f"+1555{abs(hash(name)) % 10_000_000:07d}")
    pid = link(client, account, f"{name}-0", phone).customer.customer_pid
    for i in range(1, 3):
        link(client, account, f"{name}-{i}", phone, key("email", f"{name}{i}@x.com"), seconds=i)
    return pid


def history(client, account, pid, token="", size=1):
    return client.identity.GetCustomerHistory(
        identity_pb2.GetCustomerHistoryRequest(
            account=account, customer_pid=pid, page_size=size, page_token=token
        )
    )


def refused(call, request) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["idlink-error-field"] == "page_token"
    return details


def test_a_history_token_of_one_customer_is_refused_for_another(client, account):
    first = customer_with_history(client, account, "alice")
    second = customer_with_history(client, account, "bob")
    token = history(client, account, first).next_page_token
    assert token
    details = refused(
        client.identity.GetCustomerHistory,
        identity_pb2.GetCustomerHistoryRequest(
            account=account, customer_pid=second, page_size=1, page_token=token
        ),
    )
    assert details["idlink-error-reason"] == "PAGE_TOKEN_MISMATCH"
    # The same token still pages its own customer, whatever the page size.
    assert history(client, account, first, token, size=5).events


def test_a_token_of_another_list_or_a_made_up_one_is_refused(client, account):
    pid = customer_with_history(client, account, "carol")
    token = history(client, account, pid).next_page_token
    details = refused(
        client.admin.ListIsolatedContacts,
        admin_pb2.ListIsolatedContactsRequest(account=account, page_token=token),
    )
    assert details["idlink-error-reason"] == "PAGE_TOKEN_MISMATCH"
    # The token of the format before: the list's name and the position, in the clear.
    old = base64.urlsafe_b64encode(b"history:" + (1).to_bytes(8, "big")).decode().rstrip("=")
    for made_up in ("garbage", old, token[:-2]):
        details = refused(
            client.identity.GetCustomerHistory,
            identity_pb2.GetCustomerHistoryRequest(
                account=account, customer_pid=pid, page_token=made_up
            ),
        )
        assert details["idlink-error-reason"] in {"INVALID_ARGUMENT", "PAGE_TOKEN_MISMATCH"}


def test_a_key_types_token_is_bound_to_its_account(client, account):
    for name in ("alpha", "beta", "gamma"):
        client.admin.PutKeyType(
            admin_pb2.PutKeyTypeRequest(account=account, key_type={"name": name, "priority": 5})
        )
    page = client.admin.ListKeyTypes(admin_pb2.ListKeyTypesRequest(account=account, page_size=1))
    assert page.next_page_token
    other = f"{account}-b"
    client.admin.PutKeyType(
        admin_pb2.PutKeyTypeRequest(account=other, key_type={"name": "alpha", "priority": 5})
    )
    details = refused(
        client.admin.ListKeyTypes,
        admin_pb2.ListKeyTypesRequest(account=other, page_token=page.next_page_token),
    )
    assert details["idlink-error-reason"] == "PAGE_TOKEN_MISMATCH"
    names = [k.name for k in page.key_types]
    token = page.next_page_token
    while token:
        page = client.admin.ListKeyTypes(
            admin_pb2.ListKeyTypesRequest(account=account, page_size=1, page_token=token)
        )
        names.extend(k.name for k in page.key_types)
        token = page.next_page_token
    assert names == sorted(set(names)) and {"alpha", "beta", "gamma"} <= set(names)


def test_an_audit_token_is_bound_to_its_filter(client, account):
    customer_with_history(client, account, "dave")  # three audited calls
    first = client.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(account=account, page_size=1)
    )
    assert len(first.events) == 1 and first.next_page_token
    details = refused(
        client.admin.ListAuditEvents,
        admin_pb2.ListAuditEventsRequest(
            account=account, key_id="key_other", page_token=first.next_page_token
        ),
    )
    assert details["idlink-error-reason"] == "PAGE_TOKEN_MISMATCH"
    following = client.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(
            account=account, page_size=1, page_token=first.next_page_token
        )
    )
    assert following.events[0].seq > first.events[0].seq
