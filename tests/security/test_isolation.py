"""A key sees only its own account, on every read path (SPEC 8)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from idlink.security.apikeys import create_key
from idlink.v1 import admin_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key

from .conftest import auth, link

PHONE = "+15557770001"
EMAIL = "victim@acme.com"


@pytest.fixture
def two_accounts(secure_server, stubs):
    a, b = f"iso-a-{uuid.uuid4().hex[:8]}", f"iso-b-{uuid.uuid4().hex[:8]}"
    token_a = create_key(secure_server.data, a, "admin")
    token_b = create_key(secure_server.data, b, "admin")
    linked = link(stubs, token_a, a, "r1", key("phone", PHONE), key("email", EMAIL))
    stubs.profile.RecordEngagement(
        profile_pb2.RecordEngagementRequest(
            account=a, contact=key("phone", PHONE), channel="voice", summary="secret call"
        ),
        metadata=auth(token_a),
    )
    # B holds the same national number without a country code: no suggestion may come from A.
    link(stubs, token_b, b, "r1", key("phone", "5557770001"))
    return a, b, token_a, token_b, linked.customer.customer_pid


def read_paths(stubs, account, customer_pid):
    return {
        "resolve": lambda md: stubs.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("phone", PHONE)), metadata=md
        ),
        "stream resolve": lambda md: list(
            stubs.identity.StreamResolve(
                iter([identity_pb2.ResolveRequest(account=account, contact=key("email", EMAIL))]),
                metadata=md,
            )
        ),
        "suggestions": lambda md: stubs.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("phone", "5557770001")),
            metadata=md,
        ),
        "get customer": lambda md: stubs.profile.GetCustomer(
            profile_pb2.GetCustomerRequest(account=account, customer_pid=customer_pid), metadata=md
        ),
        "journey": lambda md: stubs.profile.ListJourney(
            profile_pb2.ListJourneyRequest(account=account, customer_pid=customer_pid), metadata=md
        ),
        "change feed": lambda md: next(
            iter(
                stubs.profile.WatchChanges(
                    profile_pb2.WatchChangesRequest(account=account), metadata=md, timeout=3
                )
            )
        ),
        "history": lambda md: stubs.identity.GetCustomerHistory(
            identity_pb2.GetCustomerHistoryRequest(account=account, customer_pid=customer_pid),
            metadata=md,
        ),
        "explain": lambda md: stubs.identity.ExplainLink(
            identity_pb2.ExplainLinkRequest(
                account=account, contact=key("phone", PHONE), other=key("email", EMAIL)
            ),
            metadata=md,
        ),
        "export": lambda md: stubs.admin.ExportCustomer(
            admin_pb2.ExportCustomerRequest(account=account, customer_pid=customer_pid), metadata=md
        ),
        "audit": lambda md: stubs.admin.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(account=account), metadata=md
        ),
    }


def test_another_accounts_key_is_denied_on_every_read_path(stubs, two_accounts):
    a, _, token_a, token_b, customer_pid = two_accounts
    for name, call in read_paths(stubs, a, customer_pid).items():
        call(auth(token_a))  # the owner reads it
        with pytest.raises(grpc.RpcError) as caught:
            call(auth(token_b))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        details = caught.value.details()
        assert PHONE not in details and EMAIL not in details and customer_pid not in details


def test_own_account_never_shows_the_other_accounts_data(stubs, two_accounts):
    a, b, _, token_b, customer_pid = two_accounts
    md = auth(token_b)
    answer = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=b, contact=key("phone", PHONE)), metadata=md
    )
    assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND
    national = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=b, contact=key("phone", "5557770001")), metadata=md
    )
    assert all(s.customer_pid != customer_pid for s in national.suggestions)
    for call in (
        lambda: stubs.profile.GetCustomer(
            profile_pb2.GetCustomerRequest(account=b, customer_pid=customer_pid), metadata=md
        ),
        lambda: stubs.profile.ListJourney(
            profile_pb2.ListJourneyRequest(account=b, customer_pid=customer_pid), metadata=md
        ),
        lambda: stubs.identity.GetCustomerHistory(
            identity_pb2.GetCustomerHistoryRequest(account=b, customer_pid=customer_pid),
            metadata=md,
        ),
        lambda: stubs.admin.ExportCustomer(
            admin_pb2.ExportCustomerRequest(account=b, customer_pid=customer_pid), metadata=md
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    explained = stubs.identity.ExplainLink(
        identity_pb2.ExplainLinkRequest(account=b, contact=key("phone", "5557770001")), metadata=md
    )
    assert explained.customer_pid != customer_pid
    feed = stubs.profile.WatchChanges(
        profile_pb2.WatchChangesRequest(account=b), metadata=md, timeout=2
    )
    events = []
    with pytest.raises(grpc.RpcError):
        for response in feed:
            events.extend(response.events)
    assert events and all(
        customer_pid not in (e.customer_pid, *e.other_customer_pids) for e in events
    )
    audit = stubs.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(account=b), metadata=md)
    # B's own failed attempts name the PID B sent; nothing B was served names it.
    assert all(customer_pid not in e.customer_pids for e in audit.events if e.outcome == "OK")


def test_a_stream_naming_another_account_midway_is_denied(stubs, two_accounts):
    a, b, _, token_b, _ = two_accounts
    requests = [
        identity_pb2.ResolveRequest(account=b, contact=key("phone", "5557770001")),
        identity_pb2.ResolveRequest(account=a, contact=key("phone", PHONE)),
    ]
    answers = []
    with pytest.raises(grpc.RpcError) as caught:
        for answer in stubs.identity.StreamResolve(iter(requests), metadata=auth(token_b)):
            answers.append(answer)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert all(PHONE not in str(x) for x in answers)
