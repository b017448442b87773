"""Every role, and no, bad or revoked tokens, against every RPC through a real server (SPEC 8)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from idlink.security.roles import MINIMUM_ROLE, ROLES
from idlink.v1 import admin_pb2, common_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key

from .conftest import ROLES as ROLE_NAMES
from .conftest import auth, link

AUTH_ERRORS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
SOME_PID = "00000000-0000-4000-8000-000000000001"


def calls(stubs, account, customer_pid):
    """One request per RPC: (full method name, function of metadata)."""
    I, P, A = stubs.identity, stubs.profile, stubs.admin  # noqa: E741
    phone = key("phone", "+15550001111")
    email = key("email", "matrix@x.com")

    def ingest(md):
        batch = identity_pb2.IngestRequest(
            account=account,
            seq=1,
            records=[identity_pb2.Record(source="crm", record_id="m-ingest", contacts=[phone])],
        )
        return list(I.Ingest(iter([batch]), metadata=md, timeout=10))

    def watch(md):
        stream = P.WatchChanges(
            profile_pb2.WatchChangesRequest(account=account), metadata=md, timeout=1.5
        )
        return next(iter(stream))

    schema = profile_pb2.Schema(account=account)
    schema.fields.add(name="nickname", type=profile_pb2.FIELD_TYPE_STRING)
    return {
        "IdentityService/Resolve": lambda md: I.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=phone), metadata=md, timeout=10
        ),
        "IdentityService/StreamResolve": lambda md: list(
            I.StreamResolve(
                iter([identity_pb2.ResolveRequest(account=account, contact=phone)]),
                metadata=md,
                timeout=10,
            )
        ),
        "IdentityService/BatchResolve": lambda md: I.BatchResolve(
            identity_pb2.BatchResolveRequest(account=account, contacts=[phone]),
            metadata=md,
            timeout=10,
        ),
        "IdentityService/Link": lambda md: I.Link(
            identity_pb2.LinkRequest(
                account=account, source="crm", record_id="m1", contacts=[phone]
            ),
            metadata=md,
            timeout=10,
        ),
        "IdentityService/MergeKeys": lambda md: I.MergeKeys(
            identity_pb2.MergeKeysRequest(account=account, contacts=[phone, email]),
            metadata=md,
            timeout=10,
        ),
        "IdentityService/Ingest": ingest,
        "IdentityService/DeleteRecord": lambda md: I.DeleteRecord(
            identity_pb2.DeleteRecordRequest(account=account, source="crm", record_id="none"),
            metadata=md,
            timeout=10,
        ),
        "IdentityService/SetContactPolicy": lambda md: I.SetContactPolicy(
            identity_pb2.SetContactPolicyRequest(account=account, contact=email, do_not_link=False),
            metadata=md,
            timeout=10,
        ),
        "IdentityService/ExplainLink": lambda md: I.ExplainLink(
            identity_pb2.ExplainLinkRequest(account=account, contact=phone), metadata=md, timeout=10
        ),
        "IdentityService/GetCustomerHistory": lambda md: I.GetCustomerHistory(
            identity_pb2.GetCustomerHistoryRequest(account=account, customer_pid=customer_pid),
            metadata=md,
            timeout=10,
        ),
        "IdentityService/PreviewConfigChange": lambda md: I.PreviewConfigChange(
            identity_pb2.PreviewConfigChangeRequest(
                account=account, policy=common_pb2.AccountPolicy(max_contacts=50)
            ),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/GetCustomer": lambda md: P.GetCustomer(
            profile_pb2.GetCustomerRequest(account=account, customer_pid=customer_pid),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/UpdateCustomer": lambda md: P.UpdateCustomer(
            profile_pb2.UpdateCustomerRequest(
                account=account,
                customer=common_pb2.Customer(customer_pid=customer_pid, labels=["vip"]),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            ),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/GetSchema": lambda md: P.GetSchema(
            profile_pb2.GetSchemaRequest(account=account), metadata=md, timeout=10
        ),
        "ProfileService/UpdateSchema": lambda md: P.UpdateSchema(
            profile_pb2.UpdateSchemaRequest(
                schema=schema, update_mask=field_mask_pb2.FieldMask(paths=["fields.nickname"])
            ),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/RecordEngagement": lambda md: P.RecordEngagement(
            profile_pb2.RecordEngagementRequest(account=account, contact=phone, channel="voice"),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/ListJourney": lambda md: P.ListJourney(
            profile_pb2.ListJourneyRequest(account=account, customer_pid=customer_pid),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/RelinkEngagement": lambda md: P.RelinkEngagement(
            profile_pb2.RelinkEngagementRequest(
                account=account, engagement_id=SOME_PID, customer_pid=customer_pid
            ),
            metadata=md,
            timeout=10,
        ),
        "ProfileService/WatchChanges": watch,
        "AdminService/PutKeyType": lambda md: A.PutKeyType(
            admin_pb2.PutKeyTypeRequest(
                account=account,
                key_type=common_pb2.KeyType(name="crm_id", normalizer=common_pb2.NORMALIZER_TRIM),
            ),
            metadata=md,
            timeout=10,
        ),
        "AdminService/ListKeyTypes": lambda md: A.ListKeyTypes(
            admin_pb2.ListKeyTypesRequest(account=account), metadata=md, timeout=10
        ),
        "AdminService/SetAccountPolicy": lambda md: A.SetAccountPolicy(
            admin_pb2.SetAccountPolicyRequest(account=account, policy=common_pb2.AccountPolicy()),
            metadata=md,
            timeout=10,
        ),
        "AdminService/GetAccountPolicy": lambda md: A.GetAccountPolicy(
            admin_pb2.GetAccountPolicyRequest(account=account), metadata=md, timeout=10
        ),
        "AdminService/ListIsolatedContacts": lambda md: A.ListIsolatedContacts(
            admin_pb2.ListIsolatedContactsRequest(account=account), metadata=md, timeout=10
        ),
        "AdminService/CreateApiKey": lambda md: A.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(account=account, role=admin_pb2.ROLE_READER),
            metadata=md,
            timeout=10,
        ),
        "AdminService/ListApiKeys": lambda md: A.ListApiKeys(
            admin_pb2.ListApiKeysRequest(account=account), metadata=md, timeout=10
        ),
        "AdminService/RevokeApiKey": lambda md: A.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(account=account, key_id="key_none"),
            metadata=md,
            timeout=10,
        ),
        "AdminService/ClearKeyFlag": lambda md: A.ClearKeyFlag(
            admin_pb2.ClearKeyFlagRequest(account=account, key_id="key_none"),
            metadata=md,
            timeout=10,
        ),
        "AdminService/ListAuditEvents": lambda md: A.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(account=account), metadata=md, timeout=10
        ),
        "AdminService/SetSecurityPolicy": lambda md: A.SetSecurityPolicy(
            admin_pb2.SetSecurityPolicyRequest(account=account, policy=admin_pb2.SecurityPolicy()),
            metadata=md,
            timeout=10,
        ),
        "AdminService/GetSecurityPolicy": lambda md: A.GetSecurityPolicy(
            admin_pb2.GetSecurityPolicyRequest(account=account), metadata=md, timeout=10
        ),
        "AdminService/EraseCustomer": lambda md: A.EraseCustomer(
            admin_pb2.EraseCustomerRequest(account=account, customer_pid=SOME_PID),
            metadata=md,
            timeout=10,
        ),
        "AdminService/ExportCustomer": lambda md: A.ExportCustomer(
            admin_pb2.ExportCustomerRequest(account=account, customer_pid=customer_pid),
            metadata=md,
            timeout=10,
        ),
        "AdminService/ApplyRetention": lambda md: A.ApplyRetention(
            admin_pb2.ApplyRetentionRequest(account=account), metadata=md, timeout=10
        ),
    }


def status_of(call, metadata) -> grpc.StatusCode:
    try:
        call(metadata)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_rpc_has_a_minimum_role_and_a_test_call(stubs, account):
    from idlink.v1 import admin_pb2 as a
    from idlink.v1 import identity_pb2 as i
    from idlink.v1 import profile_pb2 as p

    served = {
        f"/{s.full_name}/{m.name}"
        for module in (a, i, p)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert served == set(MINIMUM_ROLE)
    assert {"/idlink.v1." + name for name in calls(stubs, account, SOME_PID)} == served


def test_role_by_rpc_matrix(stubs, account, tokens):
    customer_pid = link(
        stubs, tokens["admin"], account, "seed", key("phone", "+15550001111")
    ).customer.customer_pid
    revoked = stubs.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(account=account, role=admin_pb2.ROLE_ADMIN),
        metadata=auth(tokens["admin"]),
    )
    stubs.admin.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(account=account, key_id=revoked.key.key_id),
        metadata=auth(tokens["admin"]),
    )
    callers = {
        "none": "",
        "bad": "idl_" + "x" * 43,
        "not-a-token": "hello",
        "revoked": revoked.token,
        **tokens,
    }
    failures = []
    for method, call in calls(stubs, account, customer_pid).items():
        minimum = MINIMUM_ROLE["/idlink.v1." + method]
        for caller, token in callers.items():
            got = status_of(call, auth(token))
            if caller in ROLE_NAMES:
                allowed = ROLES[caller] >= minimum
                ok = (
                    (got not in AUTH_ERRORS)
                    if allowed
                    else got == grpc.StatusCode.PERMISSION_DENIED
                )
            else:
                ok = got == grpc.StatusCode.UNAUTHENTICATED
            if not ok:
                failures.append(f"{method} as {caller}: {got.name}")
    assert not failures, "\n".join(failures)


def test_health_and_reflection_need_no_token(secure_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(secure_server.target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_revocation_takes_effect_on_the_next_call(stubs, account, tokens):
    made = stubs.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            account=account, role=admin_pb2.ROLE_READER, description="bot"
        ),
        metadata=auth(tokens["admin"]),
    )
    request = identity_pb2.ResolveRequest(account=account, contact=key("email", "r@x.com"))
    stubs.identity.Resolve(request, metadata=auth(made.token))
    stubs.admin.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(account=account, key_id=made.key.key_id),
        metadata=auth(tokens["admin"]),
    )
    with pytest.raises(grpc.RpcError) as caught:
        stubs.identity.Resolve(request, metadata=auth(made.token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = stubs.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(account=account), metadata=auth(tokens["admin"])
    )
    by_id = {k.key_id: k for k in listed.keys}
    assert by_id[made.key.key_id].HasField("revoke_time")
    assert all(made.token not in str(k) for k in listed.keys)


def test_reader_and_writer_see_pii_masked_agent_and_admin_in_clear(stubs, account, tokens):
    link(
        stubs,
        tokens["admin"],
        account,
        "r1",
        key("phone", "+15551234567"),
        key("email", "John.Smith@company.com"),
    )
    request = identity_pb2.ResolveRequest(
        account=account, contact=key("email", "john.smith@company.com")
    )
    for role, expected in (
        ("reader", {"+1555*****67", "j***@company.com"}),
        ("writer", {"+1555*****67", "j***@company.com"}),
        ("agent", {"+15551234567", "john.smith@company.com"}),
        ("admin", {"+15551234567", "john.smith@company.com"}),
    ):
        answer = stubs.identity.Resolve(request, metadata=auth(tokens[role]))
        assert {c.value for c in answer.customer.contacts} == expected, role


def test_pii_profile_fields_are_masked_for_readers(stubs, account, tokens):
    customer = link(stubs, tokens["admin"], account, "r1", key("phone", "+15551234500")).customer
    update = profile_pb2.UpdateCustomerRequest(
        account=account,
        customer=common_pb2.Customer(customer_pid=customer.customer_pid),
        update_mask=field_mask_pb2.FieldMask(paths=["attributes.first_name"]),
    )
    update.customer.attributes["first_name"].string_value = "Johanna"
    stubs.profile.UpdateCustomer(update, metadata=auth(tokens["agent"]))
    get = profile_pb2.GetCustomerRequest(account=account, customer_pid=customer.customer_pid)
    masked = stubs.profile.GetCustomer(get, metadata=auth(tokens["reader"]))
    clear = stubs.profile.GetCustomer(get, metadata=auth(tokens["agent"]))
    assert masked.attributes["first_name"].string_value == "J****na"
    assert clear.attributes["first_name"].string_value == "Johanna"
