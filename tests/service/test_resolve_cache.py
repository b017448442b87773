"""Resolve through a real server serves each caller its own snapshot, and masks per caller.

The server's serving cache (docs/serving.md) keeps resolve answers, their
converted responses and admissions: every answer below must follow the write
made just before it, a revoked key must be refused on its very next call, and
a caller without PII must never get the response made for one with it.
"""

from __future__ import annotations

import grpc

from idlink.v1 import admin_pb2, identity_pb2, identity_pb2_grpc
from tests.helpers import link, resolve
from tests.service.conftest import key


def _members(response: identity_pb2.ResolveResponse) -> set[str]:
    return {c.contact_pid for c in response.customer.contacts}


def test_resolve_follows_merges_splits_and_policies(client, account):
    email, phone, other = (
        key("email", "a@x.com"),
        key("phone", "+447700900001"),
        key("email", "b@x.com"),
    )
    link(client, account, "r1", email, phone)
    link(client, account, "r2", other)
    first = resolve(client, account, email)
    assert len(first.customer.contacts) == 2
    assert resolve(client, account, email) == first  # served again, unchanged

    link(client, account, "m", email, other, seconds=10)  # a merge
    merged = resolve(client, account, email)
    assert len(merged.customer.contacts) == 3
    assert _members(merged) == _members(resolve(client, account, other))

    client.identity.DeleteRecord(
        identity_pb2.DeleteRecordRequest(account=account, source="crm", record_id="m")
    )  # a split
    assert len(resolve(client, account, email).customer.contacts) == 2
    assert len(resolve(client, account, other).customer.contacts) == 1

    client.identity.SetContactPolicy(
        identity_pb2.SetContactPolicyRequest(account=account, contact=phone, do_not_link=True)
    )
    assert resolve(client, account, phone).reason == "DO_NOT_LINK"
    assert len(resolve(client, account, email).customer.contacts) == 1


def test_batch_resolve_answers_match_single_resolves(client, account):
    keys = [key("email", f"p{i}@x.com") for i in range(5)]
    for i, k in enumerate(keys):
        link(client, account, f"r{i}", k, key("phone", f"+44770090{i:04d}"))
    link(client, account, "m", keys[0], keys[1], seconds=5)
    batch = client.identity.BatchResolve(
        identity_pb2.BatchResolveRequest(
            account=account, contacts=keys + [key("email", "none@x.com")]
        )
    )
    assert len(batch.responses) == 6
    for k, answer in zip(keys, batch.responses, strict=False):
        assert answer == resolve(client, account, k)
    assert batch.responses[5].status == identity_pb2.RESOLVE_STATUS_NOT_FOUND


def test_masking_is_per_caller_and_revocation_is_immediate(server, client, account):
    email = key("email", "jane.doe@example.com")
    link(client, account, "r1", email)
    shown = resolve(client, account, email)
    assert shown.customer.contacts[0].value == "jane.doe@example.com"

    created = client.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(account=account, role=admin_pb2.ROLE_READER)
    )
    with grpc.insecure_channel(server.target) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        metadata = (("authorization", f"Bearer {created.token}"),)
        request = identity_pb2.ResolveRequest(account=account, contact=email)
        masked = stub.Resolve(request, metadata=metadata)
        assert masked.customer.customer_pid == shown.customer.customer_pid
        assert masked.customer.contacts[0].value != "jane.doe@example.com"
        assert stub.Resolve(request, metadata=metadata) == masked
        # The admin's answer is still the clear one: responses are kept per masking.
        assert resolve(client, account, email).customer.contacts[0].value == "jane.doe@example.com"

        client.admin.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(account=account, key_id=created.key.key_id)
        )
        try:
            stub.Resolve(request, metadata=metadata)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("a revoked key was served")
