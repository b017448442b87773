"""Idempotency keys (AIP-155; docs/api.md, "Idempotency") through a real server.

A ``request_id`` is kept per caller (API key), account and method, and stands
for one request: a retry of the same request gets the first answer without
running again; the same id with a different request is refused and changes
nothing; an erasure leaves no kept answer that shows the erased customer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idlink.domain import erasure
from idlink.domain.engine import IdentityEngine
from idlink.security.crypto import open_store
from idlink.security.roles import ADMIN, Principal
from idlink.service import convert
from idlink.service.runtime import Runtime
from idlink.v1 import admin_pb2, identity_pb2, profile_pb2
from tests.helpers import resolve
from tests.service.conftest import ServerProcess, admin_token, error_details, key


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def link_request(account, record_id, *contacts, request_id="", seconds=0):
    return identity_pb2.LinkRequest(
        account=account,
        source="crm",
        record_id=record_id,
        contacts=list(contacts),
        observed_at=Timestamp(seconds=1_700_000_000 + seconds),
        request_id=request_id,
    )


def reused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    details = error_details(error)
    assert details["idlink-error-reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert details["idlink-error-field"] == "request_id"
    return error


def test_a_retry_of_the_same_request_gets_the_first_answer(client, account):
    request = link_request(account, "r1", key("phone", "+15552000001"), request_id="link-1")
    first = client.identity.Link(request)
    # Between the two, the customer changes: the retry still gets the first answer.
    client.identity.Link(
        link_request(account, "r2", key("phone", "+15552000001"), key("email", "a@x.com"))
    )
    second = client.identity.Link(request)
    assert second == first
    assert len(second.customer.contacts) == 1


def test_the_same_request_id_with_other_contacts_is_refused_and_stores_nothing(client, account):
    client.identity.Link(
        link_request(account, "r1", key("phone", "+15552000011"), request_id="link-1")
    )
    other = link_request(account, "r2", key("email", "other@x.com"), request_id="link-1")
    error = reused(client.identity.Link, other)
    assert "request_id" in error.details()
    assert resolve(client, account, key("email", "other@x.com")).status == (
        identity_pb2.RESOLVE_STATUS_NOT_FOUND
    )
    # A new request id runs it.
    other.request_id = "link-2"
    assert client.identity.Link(other).customer.contacts[0].value == "other@x.com"


def test_a_reused_request_id_is_refused_on_every_method_that_takes_one(client, account):
    phone, email = key("phone", "+15552000021"), key("email", "m@x.com")
    merge = identity_pb2.MergeKeysRequest(account=account, contacts=[phone, email], request_id="m")
    client.identity.MergeKeys(merge)
    reused(
        client.identity.MergeKeys,
        identity_pb2.MergeKeysRequest(
            account=account, contacts=[phone, key("email", "n@x.com")], request_id="m"
        ),
    )
    assert resolve(client, account, key("email", "n@x.com")).status == (
        identity_pb2.RESOLVE_STATUS_NOT_FOUND
    )
    engagement = profile_pb2.RecordEngagementRequest(
        account=account, contact=phone, channel="voice", summary="first", request_id="e"
    )
    first = client.profile.RecordEngagement(engagement)
    assert client.profile.RecordEngagement(engagement).engagement_id == first.engagement_id
    engagement.summary = "second"
    reused(client.profile.RecordEngagement, engagement)
    policy = identity_pb2.SetContactPolicyRequest(
        account=account, contact=email, do_not_link=True, request_id="p"
    )
    client.identity.SetContactPolicy(policy)
    policy.do_not_link = False
    reused(client.identity.SetContactPolicy, policy)
    # Nothing of the refused request was written: the contact stays do-not-link.
    assert resolve(client, account, email).reason == "DO_NOT_LINK"


def test_the_same_request_id_on_another_method_is_another_key(client, account):
    client.identity.Link(
        link_request(account, "r1", key("phone", "+15552000031"), request_id="same")
    )
    deleted = client.identity.DeleteRecord(
        identity_pb2.DeleteRecordRequest(
            account=account, source="crm", record_id="r1", request_id="same"
        )
    )
    assert deleted == identity_pb2.DeleteRecordResponse()
    assert resolve(client, account, key("phone", "+15552000031")).status == (
        identity_pb2.RESOLVE_STATUS_FOUND  # the contact stays, on a customer of its own
    )


def test_each_caller_has_its_own_keys_and_never_sees_another_roles_answer(
    client, server: ServerProcess, account
):
    agent = bearer(admin_token(server.data, account, "agent"))
    writer = bearer(admin_token(server.data, account, "writer"))
    request = link_request(
        account, "r1", key("phone", "+15551234567"), key("email", "jo@x.com"), request_id="shared"
    )
    seen_by_agent = client.identity.Link(request, metadata=agent)
    seen_by_writer = client.identity.Link(request, metadata=writer)
    assert {c.value for c in seen_by_agent.customer.contacts} == {"+15551234567", "jo@x.com"}
    assert {c.value for c in seen_by_writer.customer.contacts} == {"+1555*****67", "j***@x.com"}
    # The writer's own retry is its own answer again.
    assert client.identity.Link(request, metadata=writer) == seen_by_writer


def test_a_link_retried_after_erasure_does_not_return_the_erased_customer(client, account):
    request = link_request(
        account, "r1", key("phone", "+15552000041"), key("email", "gone@x.com"), request_id="l"
    )
    first = client.identity.Link(request)
    erased = client.admin.EraseCustomer(
        admin_pb2.EraseCustomerRequest(account=account, customer_pid=first.customer.customer_pid)
    )
    assert erased.contacts_erased == 2
    retried = client.identity.Link(request)
    # The retry ran again (the kept answer was dropped): a new customer, not the erased one.
    assert retried.customer.customer_pid != first.customer.customer_pid
    with pytest.raises(grpc.RpcError) as caught:
        client.profile.GetCustomer(
            profile_pb2.GetCustomerRequest(
                account=account, customer_pid=first.customer.customer_pid
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_kept_answer_showing_a_customer_erased_elsewhere_is_not_replayed(tmp_path):
    """Another server process sharing the store may erase: this one is not told, but checks.

    Run in process on a real engine, because a real server's processes cannot
    be told apart from a client: the erasure goes straight to the domain, as
    another process's would, and the runtime's kept answer is never purged.
    """
    account = "acct-elsewhere"
    viewer = Principal("key_test", account, ADMIN)
    request = link_request(
        account, "r1", key("phone", "+15552000051"), key("email", "far@x.com"), request_id="l"
    )
    with open_store(tmp_path / "store", durable=False) as store:
        engine = IdentityEngine(store, b"k" * 32)
        runs = []

        def link() -> identity_pb2.LinkResponse:
            runs.append(1)
            record = convert.record_input(request, "", 0)
            result = engine.link(account, record)
            view = engine.get_customer(account, result.customer_pid)
            return identity_pb2.LinkResponse(customer=convert.customer(view, viewer))

        async def scenario() -> tuple[str, str, str]:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                runtime = Runtime(engine, pool, None)  # type: ignore[arg-type]

                async def produce() -> identity_pb2.LinkResponse:
                    return await runtime.call(link)

                first = await runtime.idempotent("Link", viewer, account, request, produce)
                kept = await runtime.idempotent("Link", viewer, account, request, produce)
                pid = convert.parse_pid(first.customer.customer_pid, "customer_pid")
                await runtime.call(erasure.erase_customer, engine, account, pid)
                after = await runtime.idempotent("Link", viewer, account, request, produce)
            return (
                first.customer.customer_pid,
                kept.customer.customer_pid,
                after.customer.customer_pid,
            )

        first, kept, after = asyncio.run(scenario())
    assert kept == first
    assert after != first
    assert len(runs) == 2
