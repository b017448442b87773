"""IdentityService through a real server: resolve, link, merge, unmerge, explain (SPEC 2, 3, 5)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from idlink.v1 import admin_pb2, common_pb2, identity_pb2
from tests.helpers import at, link, resolve
from tests.service.conftest import key

from .conftest import error_details

ST = identity_pb2


def invalid_argument(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "Traceback" not in caught.value.details()
    return caught.value


# -- resolve statuses ----------------------------------------------------------------------


def test_unknown_contact_is_not_found_then_created_on_request(client, account):
    phone = key("phone", "+1 (555) 123-4567")
    answer = resolve(client, account, phone)
    assert answer.status == ST.RESOLVE_STATUS_NOT_FOUND
    assert answer.contact_pid and not answer.HasField("customer")

    created = resolve(client, account, phone, create=True)
    assert created.status == ST.RESOLVE_STATUS_CREATED
    assert created.contact_pid == answer.contact_pid
    assert [c.value for c in created.customer.contacts] == ["+15551234567"]

    found = resolve(client, account, key("phone", "+15551234567"))
    assert found.status == ST.RESOLVE_STATUS_FOUND
    assert found.customer.customer_pid == created.customer.customer_pid


def test_invalid_and_blocked_contacts_say_why(client, account):
    short = resolve(client, account, key("phone", "123"))
    assert short.status == ST.RESOLVE_STATUS_INVALID
    assert short.reason
    blocked = resolve(client, account, key("phone", "5555555"))
    assert blocked.status == ST.RESOLVE_STATUS_INVALID
    assert blocked.reason == "BLOCKED"
    bad_email = resolve(client, account, key("email", "not-an-email"))
    assert bad_email.status == ST.RESOLVE_STATUS_INVALID


def test_do_not_link_contact_is_not_linkable_with_suggestions(client, account):
    mailbox = key("email", "info@company.com")
    phone = key("phone", "+15550000001")
    linked = link(client, account, "r1", phone, mailbox)
    assert len(linked.customer.contacts) == 2

    policy = client.identity.SetContactPolicy(
        ST.SetContactPolicyRequest(account=account, contact=mailbox, do_not_link=True)
    )
    assert policy.contact_pid
    answer = resolve(client, account, mailbox)
    assert answer.status == ST.RESOLVE_STATUS_NOT_LINKABLE
    assert answer.reason == "DO_NOT_LINK"
    assert [c.value for c in answer.customer.contacts] == ["info@company.com"]
    phone_customer = resolve(client, account, phone).customer.customer_pid
    assert [s.customer_pid for s in answer.suggestions] == [phone_customer]
    assert answer.suggestions[0].reason == "SHARED_RECORD"

    # Cleared: the record links them again.
    client.identity.SetContactPolicy(
        ST.SetContactPolicyRequest(account=account, contact=mailbox, do_not_link=False)
    )
    assert resolve(client, account, mailbox).customer.customer_pid == phone_customer


def test_policy_on_an_unseen_contact_is_kept(client, account):
    mailbox = key("email", "sales@company.com")
    response = client.identity.SetContactPolicy(
        ST.SetContactPolicyRequest(account=account, contact=mailbox, do_not_link=True)
    )
    assert response.contact_pid and not response.HasField("customer")
    link(client, account, "r1", key("phone", "+15550000002"), mailbox)
    assert resolve(client, account, mailbox).status == ST.RESOLVE_STATUS_NOT_LINKABLE


def test_never_isolate_is_set_through_the_mask(client, account):
    contact = key("email", "vip@company.com")
    client.identity.SetContactPolicy(
        ST.SetContactPolicyRequest(
            account=account,
            contact=contact,
            never_isolate=True,
            update_mask=FieldMask(paths=["never_isolate"]),
        )
    )
    error = invalid_argument(
        client.identity.SetContactPolicy,
        ST.SetContactPolicyRequest(
            account=account, contact=contact, update_mask=FieldMask(paths=["value"])
        ),
    )
    assert error_details(error)["idlink-error-field"] == "update_mask.paths[0]"


def test_phone_without_country_code_suggests_the_national_number(client, account):
    link(client, account, "r1", key("phone", "+1 555 123 4567"), key("email", "jan@x.com"))
    answer = resolve(client, account, key("phone", "(555) 123-4567"))
    assert answer.status == ST.RESOLVE_STATUS_NOT_FOUND
    owner = resolve(client, account, key("email", "jan@x.com")).customer.customer_pid
    assert [s.customer_pid for s in answer.suggestions] == [owner]
    assert answer.suggestions[0].reason.startswith("NATIONAL_NUMBER")
    assert answer.suggestions[0].score > 0


def test_isolated_contact_is_not_linkable(client, account):
    client.admin.SetAccountPolicy(
        admin_pb2.SetAccountPolicyRequest(
            account=account,
            policy=common_pb2.AccountPolicy(max_contacts=5, isolate_min_connections=3),
        )
    )
    placeholder = key("email", "no@email.com")
    for i in range(8):
        link(client, account, f"row{i}", key("phone", f"+1555000{i:04d}"), placeholder, seconds=i)
    answer = resolve(client, account, placeholder)
    assert answer.status == ST.RESOLVE_STATUS_NOT_LINKABLE
    assert answer.reason.startswith("ISOLATED")
    assert len(answer.suggestions) > 0
    for i in range(8):
        phone = resolve(client, account, key("phone", f"+1555000{i:04d}"))
        assert phone.status == ST.RESOLVE_STATUS_FOUND
        assert len(phone.customer.contacts) == 1


# -- streaming and batch resolve ------------------------------------------------------------


def test_stream_resolve_answers_in_request_order(client, account):
    values = [f"+1555200{i:04d}" for i in range(60)]
    link(client, account, "seed", key("phone", values[7]), key("email", "seed@x.com"))
    requests = [
        ST.ResolveRequest(account=account, contact=key("phone", v), create_if_missing=i % 2 == 0)
        for i, v in enumerate(values)
    ]
    answers = list(client.identity.StreamResolve(iter(requests)))
    assert len(answers) == len(values)
    for i, (value, answer) in enumerate(zip(values, answers, strict=True)):
        if i == 7:
            assert answer.status == ST.RESOLVE_STATUS_FOUND
        elif i % 2 == 0:
            assert answer.status == ST.RESOLVE_STATUS_CREATED
        else:
            assert answer.status == ST.RESOLVE_STATUS_NOT_FOUND
        if answer.HasField("customer"):
            assert value in [c.value for c in answer.customer.contacts]


def test_stream_resolve_ends_with_invalid_argument_on_a_malformed_request(client, account):
    requests = [
        ST.ResolveRequest(account=account, contact=key("phone", "+15553000001")),
        ST.ResolveRequest(account=account, contact=key("fax", "1")),
    ]
    call = client.identity.StreamResolve(iter(requests))
    first = next(call)
    assert first.status == ST.RESOLVE_STATUS_NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 1" in caught.value.details()
    assert error_details(caught.value)["idlink-error-reason"] == "UNKNOWN_KEY_TYPE"


def test_batch_resolve_answers_in_order(client, account):
    link(client, account, "r1", key("phone", "+15554000001"), key("email", "b@x.com"))
    answer = client.identity.BatchResolve(
        ST.BatchResolveRequest(
            account=account,
            contacts=[key("email", "B@X.com"), key("phone", "1"), key("email", "new@x.com")],
        )
    )
    assert [r.status for r in answer.responses] == [
        ST.RESOLVE_STATUS_FOUND,
        ST.RESOLVE_STATUS_INVALID,
        ST.RESOLVE_STATUS_NOT_FOUND,
    ]
    error = invalid_argument(
        client.identity.BatchResolve,
        ST.BatchResolveRequest(account=account, contacts=[key("email", "a@x.com"), key("", "x")]),
    )
    assert error_details(error)["idlink-error-field"] == "contacts[1].type"
    error = invalid_argument(
        client.identity.BatchResolve,
        ST.BatchResolveRequest(account=account, contacts=[key("email", "a@x.com")] * 1001),
    )
    assert error_details(error)["idlink-error-field"] == "contacts"


# -- link outcomes ------------------------------------------------------------------------------


def test_link_applied_merges_contacts_into_one_customer(client, account):
    first = link(client, account, "r1", key("phone", "+15555000001"), key("email", "a@x.com"))
    assert first.outcome == common_pb2.RECORD_OUTCOME_APPLIED
    second = link(client, account, "r2", key("email", "a@x.com"), key("id", "C-1", "zendesk"))
    assert second.outcome == common_pb2.RECORD_OUTCOME_APPLIED
    assert second.customer.customer_pid == first.customer.customer_pid
    assert sorted(c.type for c in second.customer.contacts) == ["email", "id", "phone"]
    assert len(second.contact_pids) == 2
    # The same record again changes nothing.
    again = link(client, account, "r2", key("email", "a@x.com"), key("id", "C-1", "zendesk"))
    assert again.customer == second.customer


def test_link_capped_by_the_cluster_cap(client, account):
    client.admin.SetAccountPolicy(
        admin_pb2.SetAccountPolicyRequest(
            account=account,
            policy=common_pb2.AccountPolicy(max_contacts=3, isolate_min_connections=100),
        )
    )
    link(client, account, "r1", key("phone", "+15556000001"), key("email", "c1@x.com"), seconds=1)
    link(client, account, "r2", key("email", "c1@x.com"), key("phone", "+15556000002"), seconds=2)
    other = link(client, account, "r3", key("phone", "+15556000003"), seconds=3)
    capped = link(
        client, account, "r4", key("phone", "+15556000002"), key("phone", "+15556000003"), seconds=4
    )
    assert capped.outcome == common_pb2.RECORD_OUTCOME_CAPPED
    assert other.customer.customer_pid in capped.conflicting_customer_pids
    assert len(capped.customer.contacts) == 3


def test_link_conflict_on_a_key_limit_reports_the_other_customer(client, account):
    client.admin.PutKeyType(
        admin_pb2.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(
                name="crm_id", normalizer=common_pb2.NORMALIZER_TRIM, max_per_customer=1
            ),
        )
    )
    link(client, account, "r1", key("phone", "+15557000001"), key("crm_id", "A"), seconds=1)
    other = link(client, account, "r2", key("crm_id", "B"), key("email", "b@x.com"), seconds=2)
    conflict = link(
        client, account, "r3", key("phone", "+15557000001"), key("crm_id", "B"), seconds=3
    )
    assert conflict.outcome == common_pb2.RECORD_OUTCOME_CONFLICT
    assert other.customer.customer_pid in conflict.conflicting_customer_pids
    assert [c.value for c in conflict.customer.contacts if c.type == "crm_id"] == ["A"]


def test_link_validates_the_record_and_changes_nothing_when_it_fails(client, account):
    too_many = [key("email", f"p{i}@x.com") for i in range(65)]
    error = invalid_argument(
        client.identity.Link,
        ST.LinkRequest(account=account, source="crm", record_id="big", contacts=too_many),
    )
    assert error_details(error)["idlink-error-field"] == "contacts"
    error = invalid_argument(
        client.identity.Link,
        ST.LinkRequest(account=account, source="crm", record_id="none"),
    )
    assert error_details(error)["idlink-error-field"] == "contacts"
    error = invalid_argument(
        client.identity.Link,
        ST.LinkRequest(account="", source="crm", record_id="x", contacts=[key("email", "a@x.com")]),
    )
    assert error_details(error)["idlink-error-field"] == "account"
    error = invalid_argument(
        client.identity.Link,
        ST.LinkRequest(
            account=account,
            source="crm",
            record_id="x",
            contacts=[key("email", "a@x.com"), key("id", "no-source")],
        ),
    )
    assert error_details(error)["idlink-error-field"] == "contacts[1].source"
    error = invalid_argument(
        client.identity.Link,
        ST.LinkRequest(
            account=account,
            source="crm",
            record_id="x",
            contacts=[key("email", "a@x.com"), key("phone", "9" * 5000)],
        ),
    )
    assert "Traceback" not in error.details()
    assert resolve(client, account, key("email", "a@x.com")).status == ST.RESOLVE_STATUS_NOT_FOUND


# -- merge, unmerge, delete -------------------------------------------------------------------


def test_merge_keys_then_deleting_the_manual_record_unmerges(client, account):
    phone, email = key("phone", "+15558000001"), key("email", "m@x.com")
    a = resolve(client, account, phone, create=True).customer.customer_pid
    b = resolve(client, account, email, create=True).customer.customer_pid
    assert a != b
    merged = client.identity.MergeKeys(
        ST.MergeKeysRequest(account=account, contacts=[phone, email])
    )
    assert merged.outcome == common_pb2.RECORD_OUTCOME_APPLIED
    assert merged.source == "manual" and merged.record_id
    assert len(merged.customer.contacts) == 2
    assert resolve(client, account, email).customer.customer_pid == merged.customer.customer_pid

    client.identity.DeleteRecord(
        ST.DeleteRecordRequest(account=account, source=merged.source, record_id=merged.record_id)
    )
    after_phone = resolve(client, account, phone).customer
    after_email = resolve(client, account, email).customer
    assert after_phone.customer_pid != after_email.customer_pid
    assert len(after_phone.contacts) == len(after_email.contacts) == 1


def test_merge_keys_needs_two_contacts_and_a_retry_is_one_record(client, account):
    error = invalid_argument(
        client.identity.MergeKeys,
        ST.MergeKeysRequest(account=account, contacts=[key("email", "solo@x.com")]),
    )
    assert error_details(error)["idlink-error-field"] == "contacts"
    request = ST.MergeKeysRequest(
        account=account,
        contacts=[key("email", "r1@x.com"), key("email", "r2@x.com")],
        request_id="merge-once",
    )
    first = client.identity.MergeKeys(request)
    second = client.identity.MergeKeys(request)
    assert first == second
    assert first.record_id == "merge-once"


def test_delete_record_splits_and_an_unknown_record_is_not_found(client, account):
    link(client, account, "r1", key("phone", "+15559000001"), key("email", "d@x.com"))
    client.identity.DeleteRecord(
        ST.DeleteRecordRequest(account=account, source="crm", record_id="r1")
    )
    assert resolve(client, account, key("phone", "+15559000001")).customer.contacts[0].value == (
        "+15559000001"
    )
    assert len(resolve(client, account, key("email", "d@x.com")).customer.contacts) == 1
    with pytest.raises(grpc.RpcError) as caught:
        client.identity.DeleteRecord(
            ST.DeleteRecordRequest(account=account, source="crm", record_id="r1")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_record_retry_with_a_request_id_gets_the_first_answer(client, account):
    link(client, account, "r1", key("phone", "+15559100001"), key("email", "e@x.com"))
    request = ST.DeleteRecordRequest(
        account=account, source="crm", record_id="r1", request_id="del-1"
    )
    first = client.identity.DeleteRecord(request)
    retried = client.identity.DeleteRecord(request)  # not NOT_FOUND: the same request
    assert retried == first == ST.DeleteRecordResponse()
    # The first call deleted the record (the customer split); the retry ran nothing:
    # without the request id the same delete finds no record.
    assert len(resolve(client, account, key("email", "e@x.com")).customer.contacts) == 1
    with pytest.raises(grpc.RpcError) as caught:
        client.identity.DeleteRecord(
            ST.DeleteRecordRequest(account=account, source="crm", record_id="r1")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# -- explain, history, preview -----------------------------------------------------------------


def test_explain_link_gives_the_chain_of_records(client, account):
    phone, email, crm = key("phone", "+15551100001"), key("email", "x@x.com"), key("id", "9", "crm")
    link(client, account, "r1", phone, email, seconds=1)
    link(client, account, "r2", email, crm, seconds=2)
    answer = client.identity.ExplainLink(
        ST.ExplainLinkRequest(account=account, contact=phone, other=crm)
    )
    assert answer.linked
    assert [(h.source, h.record_id) for h in answer.hops] == [("crm", "r1"), ("crm", "r2")]
    assert answer.hops[0].observed_at == at(1)

    client.identity.SetContactPolicy(
        ST.SetContactPolicyRequest(account=account, contact=email, do_not_link=True)
    )
    alone = client.identity.ExplainLink(ST.ExplainLinkRequest(account=account, contact=email))
    assert not alone.linked
    assert "DO_NOT_LINK" in alone.reasons

    with pytest.raises(grpc.RpcError) as caught:
        client.identity.ExplainLink(
            ST.ExplainLinkRequest(account=account, contact=key("email", "never@x.com"))
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_customer_history_is_paged(client, account):
    phone = key("phone", "+15551200001")
    customer = link(client, account, "r0", phone).customer.customer_pid
    for i in range(1, 6):
        link(client, account, f"r{i}", phone, key("email", f"h{i}@x.com"), seconds=i)
    seen = []
    token = ""
    while True:
        page = client.identity.GetCustomerHistory(
            ST.GetCustomerHistoryRequest(
                account=account, customer_pid=customer, page_size=2, page_token=token
            )
        )
        assert len(page.events) <= 2
        seen.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    assert seen[0].kind == common_pb2.CHANGE_KIND_CREATED
    assert len(seen) >= 6
    assert [e.seq for e in seen] == sorted({e.seq for e in seen})

    error = invalid_argument(
        client.identity.GetCustomerHistory,
        ST.GetCustomerHistoryRequest(account=account, customer_pid=customer, page_token="garbage"),
    )
    assert error_details(error)["idlink-error-field"] == "page_token"
    error = invalid_argument(
        client.identity.GetCustomerHistory,
        ST.GetCustomerHistoryRequest(account=account, customer_pid="not-a-uuid"),
    )
    assert error_details(error)["idlink-error-field"] == "customer_pid"


def test_preview_of_a_lower_cap_counts_splits_and_changes_nothing(client, account):
    for i in range(4):
        link(client, account, f"r{i}", key("email", "hub@x.com"), key("phone", f"+1555130{i:04d}"))
    before = resolve(client, account, key("email", "hub@x.com")).customer
    assert len(before.contacts) == 5
    preview = client.identity.PreviewConfigChange(
        ST.PreviewConfigChangeRequest(
            account=account,
            policy=common_pb2.AccountPolicy(max_contacts=2, isolate_min_connections=1),
        )
    )
    assert preview.splits == 1
    assert list(preview.split_customer_pids) == [before.customer_pid]
    assert resolve(client, account, key("email", "hub@x.com")).customer == before
    invalid_argument(
        client.identity.PreviewConfigChange, ST.PreviewConfigChangeRequest(account=account)
    )
