"""ProfileService through a real server: customers, schema, profile edits, journeys (SPEC 4, 6)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import common_pb2, identity_pb2, profile_pb2
from tests.helpers import link
from tests.service.conftest import key

from .conftest import error_details

P = profile_pb2


def customer_of(client, account, contact) -> common_pb2.Customer:
    return client.identity.Resolve(
        identity_pb2.ResolveRequest(account=account, contact=contact, create_if_missing=True)
    ).customer


def field(name, type_, **kw) -> P.SchemaField:
    return P.SchemaField(name=name, type=type_, **kw)


def put_fields(client, account, *fields):
    return client.profile.UpdateSchema(
        P.UpdateSchemaRequest(schema=P.Schema(account=account, fields=list(fields)))
    )


def update(client, account, customer, paths=(), **kw):
    return client.profile.UpdateCustomer(
        P.UpdateCustomerRequest(
            account=account, customer=customer, update_mask=FieldMask(paths=list(paths)), **kw
        )
    )


def rejected(call, *args, code=grpc.StatusCode.INVALID_ARGUMENT, **kwargs) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    assert caught.value.code() == code, caught.value.details()
    assert "Traceback" not in caught.value.details()
    return {**error_details(caught.value), "details": caught.value.details()}


# -- customers ---------------------------------------------------------------------------------


def test_get_customer_returns_the_customer_and_follows_redirects(client, account):
    first = customer_of(client, account, key("phone", "+15551000001"))
    second = customer_of(client, account, key("email", "g@x.com"))
    got = client.profile.GetCustomer(
        P.GetCustomerRequest(account=account, customer_pid=first.customer_pid)
    )
    assert got.customer_pid == first.customer_pid and not got.redirected_from

    merged = link(client, account, "r1", key("phone", "+15551000001"), key("email", "g@x.com"))
    survivor = merged.customer.customer_pid
    gone = second.customer_pid if survivor == first.customer_pid else first.customer_pid
    redirected = client.profile.GetCustomer(
        P.GetCustomerRequest(account=account, customer_pid=gone)
    )
    assert redirected.customer_pid == survivor
    assert redirected.redirected_from == gone
    assert len(redirected.contacts) == 2


def test_get_customer_errors(client, account):
    details = rejected(
        client.profile.GetCustomer, P.GetCustomerRequest(account=account, customer_pid="x")
    )
    assert details["idlink-error-field"] == "customer_pid"
    rejected(
        client.profile.GetCustomer,
        P.GetCustomerRequest(account=account, customer_pid="00000000-0000-4000-8000-000000000000"),
        code=grpc.StatusCode.NOT_FOUND,
    )


# -- schema -------------------------------------------------------------------------------------


def test_schema_starts_with_the_system_fields(client, account):
    schema = client.profile.GetSchema(P.GetSchemaRequest(account=account))
    assert [(f.name, f.system) for f in schema.fields] == [
        ("first_name", True),
        ("phone_number", True),
    ]


def test_schema_fields_are_added_changed_and_removed(client, account):
    schema = put_fields(
        client,
        account,
        field("tier", P.FIELD_TYPE_ENUM, enum_values=["gold", "silver"]),
        field("balance", P.FIELD_TYPE_DOUBLE, description="Open balance"),
    )
    assert [f.name for f in schema.fields] == ["first_name", "phone_number", "balance", "tier"]
    assert schema.version == 1
    removed = client.profile.UpdateSchema(
        P.UpdateSchemaRequest(
            schema=P.Schema(account=account), update_mask=FieldMask(paths=["fields.balance"])
        )
    )
    assert [f.name for f in removed.fields] == ["first_name", "phone_number", "tier"]


def test_system_fields_cannot_be_removed(client, account):
    details = rejected(
        client.profile.UpdateSchema,
        P.UpdateSchemaRequest(
            schema=P.Schema(account=account), update_mask=FieldMask(paths=["fields.first_name"])
        ),
    )
    assert details["idlink-error-reason"] == "SYSTEM_FIELD"
    assert "first_name" in details["idlink-error-field"]
    # Replacing the whole list without them is refused too.
    details = rejected(
        client.profile.UpdateSchema,
        P.UpdateSchemaRequest(
            schema=P.Schema(account=account, fields=[field("x", P.FIELD_TYPE_INT)]),
            update_mask=FieldMask(paths=["fields"]),
        ),
    )
    assert details["idlink-error-reason"] == "SYSTEM_FIELD"
    details = rejected(
        client.profile.UpdateSchema,
        P.UpdateSchemaRequest(
            schema=P.Schema(account=account, fields=[field("phone_number", P.FIELD_TYPE_INT)])
        ),
    )
    assert details["idlink-error-field"] == "schema.fields[0].type"
    schema = client.profile.GetSchema(P.GetSchemaRequest(account=account))
    assert [f.name for f in schema.fields] == ["first_name", "phone_number"]


def test_schema_definitions_are_validated(client, account):
    details = rejected(put_fields, client, account, field("Bad Name", P.FIELD_TYPE_STRING))
    assert details["idlink-error-field"] == "schema.fields[0].name"
    details = rejected(
        put_fields,
        client,
        account,
        field("ok", P.FIELD_TYPE_STRING),
        field("tier", P.FIELD_TYPE_ENUM),
    )
    assert details["idlink-error-field"] == "schema.fields[1].enum_values"
    details = rejected(put_fields, client, account, field("untyped", P.FIELD_TYPE_UNSPECIFIED))
    assert details["idlink-error-field"] == "schema.fields[0].type"
    put_fields(client, account, field("age", P.FIELD_TYPE_INT))
    details = rejected(
        put_fields,
        client,
        account,
        field("age", P.FIELD_TYPE_STRING),
        code=grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details["idlink-error-reason"] == "FIELD_TYPE_CHANGE"


# -- profile updates ----------------------------


def test_update_customer_sets_typed_attributes_labels_and_preferences(client, account):
    put_fields(
        client,
        account,
        field("tier", P.FIELD_TYPE_ENUM, enum_values=["gold", "silver"]),
        field("age", P.FIELD_TYPE_INT),
        field("since", P.FIELD_TYPE_TIMESTAMP),
        field("tags", P.FIELD_TYPE_STRING_LIST),
        field("vip", P.FIELD_TYPE_BOOL),
    )
    customer = customer_of(client, account, key("phone", "+15552000001"))
    phone_pid = customer.contacts[0].contact_pid
    edit = common_pb2.Customer(customer_pid=customer.customer_pid)
    edit.attributes["first_name"].string_value = "Jana"
    edit.attributes["tier"].enum_value = "gold"
    edit.attributes["age"].int_value = 41
    edit.attributes["since"].timestamp_value.FromSeconds(1_600_000_000)
    edit.attributes["tags"].string_list_value.values.extend(["debtor", "q3"])
    edit.attributes["vip"].bool_value = True
    edit.labels.extend(["VIP", "campaign-7"])
    edit.preferences.preferred_channel = "sms"
    edit.preferences.preferred_contact_pid = phone_pid
    edit.preferences.time_zone = "Europe/Prague"
    edit.preferences.language = "cs"
    edit.preferences.best_times.add(days=[common_pb2.WEEKDAY_MONDAY], start="09:00", end="12:00")
    edit.preferences.consents.add(channel="email", status=common_pb2.CONSENT_STATUS_OPTED_OUT)
    updated = update(client, account, edit)
    assert updated.attributes["first_name"].string_value == "Jana"
    assert updated.attributes["tier"].enum_value == "gold"
    assert updated.attributes["age"].int_value == 41
    assert updated.attributes["since"].timestamp_value.seconds == 1_600_000_000
    assert list(updated.attributes["tags"].string_list_value.values) == ["debtor", "q3"]
    assert updated.attributes["vip"].bool_value is True
    assert list(updated.labels) == ["VIP", "campaign-7"]
    assert updated.preferences.preferred_contact_pid == phone_pid
    assert updated.preferences.consents[0].status == common_pb2.CONSENT_STATUS_OPTED_OUT
    got = client.profile.GetCustomer(
        P.GetCustomerRequest(account=account, customer_pid=customer.customer_pid)
    )
    assert got == updated

    # Labels added and removed; one attribute cleared by the mask; the rest stays.
    changed = update(
        client,
        account,
        common_pb2.Customer(customer_pid=customer.customer_pid),
        ["attributes.age"],
        add_labels=["high-priority"],
        remove_labels=["campaign-7"],
    )
    assert "age" not in changed.attributes
    assert changed.attributes["tier"].enum_value == "gold"
    assert list(changed.labels) == ["VIP", "high-priority"]


def test_unknown_field_or_wrong_type_is_refused_naming_the_field(client, account):
    put_fields(client, account, field("age", P.FIELD_TYPE_INT))
    customer = customer_of(client, account, key("email", "w@x.com"))
    good = common_pb2.Customer(customer_pid=customer.customer_pid)
    good.attributes["first_name"].string_value = "Petr"
    update(client, account, good)

    unknown = common_pb2.Customer(customer_pid=customer.customer_pid)
    unknown.attributes["first_name"].string_value = "Pavel"
    unknown.attributes["shoe_size"].int_value = 44
    details = rejected(update, client, account, unknown)
    assert details["idlink-error-field"] == "attributes.shoe_size"
    assert details["idlink-error-reason"] == "UNKNOWN_FIELD"

    wrong = common_pb2.Customer(customer_pid=customer.customer_pid)
    wrong.attributes["first_name"].string_value = "Pavel"
    wrong.attributes["age"].string_value = "forty"
    details = rejected(update, client, account, wrong)
    assert details["idlink-error-field"] == "attributes.age"
    assert details["idlink-error-reason"] == "WRONG_TYPE"

    bad_prefs = common_pb2.Customer(customer_pid=customer.customer_pid)
    bad_prefs.preferences.time_zone = "Mars/Olympus"
    details = rejected(update, client, account, bad_prefs)
    assert details["idlink-error-field"] == "preferences.time_zone"

    details = rejected(update, client, account, good, ["contacts"])
    assert details["idlink-error-field"] == "update_mask.paths[0]"

    # Nothing of the failed requests was written.
    got = client.profile.GetCustomer(
        P.GetCustomerRequest(account=account, customer_pid=customer.customer_pid)
    )
    assert got.attributes["first_name"].string_value == "Petr"
    assert "age" not in got.attributes and not got.HasField("preferences")


def test_required_fields_must_stay_set(client, account):
    put_fields(client, account, field("crm_owner", P.FIELD_TYPE_STRING, required=True))
    customer = customer_of(client, account, key("email", "req@x.com"))
    edit = common_pb2.Customer(customer_pid=customer.customer_pid)
    edit.attributes["first_name"].string_value = "Eva"
    details = rejected(update, client, account, edit)
    assert details["idlink-error-field"] == "attributes.crm_owner"
    edit.attributes["crm_owner"].string_value = "agent-7"
    assert update(client, account, edit).attributes["crm_owner"].string_value == "agent-7"


def test_merged_profiles_keep_the_survivors_values_and_join_labels(client, account):
    a = customer_of(client, account, key("phone", "+15553000001"))
    b = customer_of(client, account, key("email", "merge@x.com"))
    edit_a = common_pb2.Customer(customer_pid=a.customer_pid, labels=["A"])
    edit_a.attributes["first_name"].string_value = "Adam"
    update(client, account, edit_a)
    edit_b = common_pb2.Customer(customer_pid=b.customer_pid, labels=["B"])
    edit_b.attributes["first_name"].string_value = "Bob"
    edit_b.attributes["phone_number"].string_value = "+15553000001"
    update(client, account, edit_b)
    merged = link(
        client, account, "m", key("phone", "+15553000001"), key("email", "merge@x.com")
    ).customer
    assert merged.customer_pid == a.customer_pid  # the oldest survives
    assert merged.attributes["first_name"].string_value == "Adam"
    assert merged.attributes["phone_number"].string_value == "+15553000001"
    assert sorted(merged.labels) == ["A", "B"]


# -- engagements and the journey ------------------------------------------------------------------


def engage(client, account, contact, seconds, **kw):
    return client.profile.RecordEngagement(
        P.RecordEngagementRequest(
            account=account,
            contact=contact,
            occurred_at=Timestamp(seconds=1_700_000_000 + seconds),
            channel=kw.pop("channel", "voice"),
            **kw,
        )
    )


def journey(client, account, customer_pid, page_size=0):
    out, token = [], ""
    while True:
        page = client.profile.ListJourney(
            P.ListJourneyRequest(
                account=account, customer_pid=customer_pid, page_size=page_size, page_token=token
            )
        )
        if page_size:
            assert len(page.engagements) <= page_size
        out.extend(page.engagements)
        token = page.next_page_token
        if not token:
            return out


def test_journey_is_time_ordered_and_paged_and_pins_move_engagements(client, account):
    phone, email = key("phone", "+15554000001"), key("email", "j@x.com")
    for s in (50, 10, 30, 20, 40):
        engage(client, account, phone, s, summary=f"call {s}", direction="inbound")
    pinned = [engage(client, account, email, s, channel="email") for s in (15, 25, 35)]
    a = customer_of(client, account, phone).customer_pid
    b = customer_of(client, account, email).customer_pid
    calls = journey(client, account, a, page_size=2)
    assert [e.summary for e in calls] == ["call 10", "call 20", "call 30", "call 40", "call 50"]
    assert len(journey(client, account, b)) == 3

    relinked = client.profile.RelinkEngagement(
        P.RelinkEngagementRequest(
            account=account, engagement_id=pinned[0].engagement_id, customer_pid=a
        )
    )
    assert relinked.pinned_customer_pid == a
    in_a = journey(client, account, a, page_size=4)
    assert [e.engagement_id for e in in_a][1] == pinned[0].engagement_id
    assert pinned[0].engagement_id not in [e.engagement_id for e in journey(client, account, b)]

    # The pin survives a merge of A with another customer.
    link(client, account, "m", phone, key("id", "77", "crm"))
    merged = customer_of(client, account, phone).customer_pid
    assert pinned[0].engagement_id in [e.engagement_id for e in journey(client, account, merged)]

    details = rejected(
        client.profile.ListJourney,
        P.ListJourneyRequest(account=account, customer_pid=a, page_token="!!"),
    )
    assert details["idlink-error-field"] == "page_token"
    rejected(
        client.profile.RelinkEngagement,
        P.RelinkEngagementRequest(
            account=account,
            engagement_id="00000000-0000-4000-8000-000000000000",
            customer_pid=a,
        ),
        code=grpc.StatusCode.NOT_FOUND,
    )


def test_record_engagement_retry_with_a_request_id_is_one_engagement(client, account):
    contact = key("phone", "+15554100001")
    first = engage(client, account, contact, 1, request_id="call-123")
    second = engage(client, account, contact, 1, request_id="call-123")
    assert first.engagement_id == second.engagement_id
    customer = customer_of(client, account, contact).customer_pid
    assert len(journey(client, account, customer)) == 1
    details = rejected(engage, client, account, contact, 2, engagement_id="nope")
    assert details["idlink-error-field"] == "engagement_id"
    details = rejected(engage, client, account, contact, 2, channel="")
    assert details["idlink-error-field"] == "channel"
