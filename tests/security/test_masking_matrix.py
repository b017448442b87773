"""What every role sees of PII, on every RPC that can show it, through a real server (SPEC 8).

One account holds a customer with a phone, an email and a CRM id, PII and
non-PII profile fields, engagements with free text, and records whose ids are
phone numbers (a source may use one as its record id). Every RPC that returns a
customer, a contact value, a profile field, engagement text or a record id is
called with a key of every role that may call it; responses built on the event
loop (plain resolves) and on the thread pool (``create_if_missing``, links,
merges, policy and profile changes, journeys, explanations) are both covered.
``agent`` and ``admin`` see everything in clear; ``reader`` and ``writer`` see
contact values, PII profile fields, engagement text and stored record ids
masked, and never a clear value anywhere in the response bytes.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from idlink.domain import profiles
from idlink.domain.views import ContactView, CustomerView, Explanation, Hop
from idlink.security import roles
from idlink.security.apikeys import create_key
from idlink.service import convert
from idlink.store.txn import EngagementState, Profile
from idlink.v1 import admin_pb2, common_pb2, identity_pb2, profile_pb2
from tests.service.conftest import ServerProcess, key

from .conftest import ROLES, Stubs, auth

PHONE = "+15551234567"
EMAIL = "john.smith@company.com"
CRM = "C-1"
FIRST_NAME = "Johanna"
BIRTH_YEAR = 1980
SUMMARY = "Johanna asked to move her delivery"
CALLBACK = "evenings after six"
# Record ids that are phone numbers: the linking record and a refused one.
RECORD_ID = "+15557654321"
CONFLICT_RECORD_ID = "+15550009999"
INGESTED_RECORD_ID = "+15550008888"

CLEAR_CONTACTS = {("phone", PHONE), ("email", EMAIL), ("crm_id", CRM)}
MASKED_CONTACTS = {("phone", "+1555*****67"), ("email", "j***@company.com"), ("crm_id", "***")}
CLEAR_ATTRIBUTES = {"first_name": FIRST_NAME, "tier": "gold", "birth_year": BIRTH_YEAR}
# A PII string keeps its first and last two characters; a PII int is left out; tier is not PII.
MASKED_ATTRIBUTES = {"first_name": "J****na", "tier": "gold"}
MASKED_SUMMARY = "J" + "*" * (len(SUMMARY) - 3) + "ry"
MASKED_CALLBACK = "e" + "*" * (len(CALLBACK) - 3) + "ix"
MASKED_RECORD_ID = "+1********21"
MASKED_CONFLICT_RECORD_ID = "+1********99"

# Values that must never appear, anywhere in a response, for a role without PII.
SECRETS = (PHONE, EMAIL, FIRST_NAME, SUMMARY, CALLBACK, RECORD_ID, CONFLICT_RECORD_ID)

CLEAR_ROLES = {"agent", "admin"}


@dataclass
class World:
    stubs: Stubs
    account: str
    tokens: dict[str, str]
    customer_pid: str
    engagement_id: str


def _link(stubs, token, account, record_id, *contacts, seconds=0):
    request = identity_pb2.LinkRequest(
        account=account, source="crm", record_id=record_id, contacts=list(contacts)
    )
    request.observed_at.FromSeconds(1_700_000_000 + seconds)
    return stubs.identity.Link(request, metadata=auth(token), timeout=10)


@pytest.fixture(scope="module")
def world(secure_server: ServerProcess, stubs: Stubs) -> Iterator[World]:
    account = f"mask-{uuid.uuid4().hex[:12]}"
    tokens = {role: create_key(secure_server.data, account, role) for role in ROLES}
    admin = auth(tokens["admin"])
    stubs.admin.PutKeyType(
        admin_pb2.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(
                name="crm_id", normalizer=common_pb2.NORMALIZER_TRIM, max_per_customer=1
            ),
        ),
        metadata=admin,
        timeout=10,
    )
    schema = profile_pb2.Schema(account=account)
    schema.fields.add(name="tier", type=profile_pb2.FIELD_TYPE_STRING)
    schema.fields.add(name="birth_year", type=profile_pb2.FIELD_TYPE_INT, pii=True)
    stubs.profile.UpdateSchema(
        profile_pb2.UpdateSchemaRequest(schema=schema), metadata=admin, timeout=10
    )
    linked = _link(
        stubs,
        tokens["admin"],
        account,
        RECORD_ID,
        key("phone", PHONE),
        key("email", "John.Smith@company.com"),
        key("crm_id", CRM),
        seconds=1,
    )
    # A second CRM id for the same email breaks the limit of one: a refused record.
    refused = _link(
        stubs,
        tokens["admin"],
        account,
        CONFLICT_RECORD_ID,
        key("email", EMAIL),
        key("crm_id", "C-2"),
        seconds=2,
    )
    assert refused.outcome == common_pb2.RECORD_OUTCOME_CONFLICT
    pid = linked.customer.customer_pid
    update = profile_pb2.UpdateCustomerRequest(
        account=account, customer=common_pb2.Customer(customer_pid=pid)
    )
    update.customer.attributes["first_name"].string_value = FIRST_NAME
    update.customer.attributes["tier"].string_value = "gold"
    update.customer.attributes["birth_year"].int_value = BIRTH_YEAR
    stubs.profile.UpdateCustomer(update, metadata=auth(tokens["agent"]), timeout=10)
    engagement = stubs.profile.RecordEngagement(
        _engagement_request(account), metadata=admin, timeout=10
    )
    yield World(stubs, account, tokens, pid, engagement.engagement_id)


def _engagement_request(account: str) -> profile_pb2.RecordEngagementRequest:
    return profile_pb2.RecordEngagementRequest(
        account=account,
        contact=key("phone", PHONE),
        occurred_at=Timestamp(seconds=1_700_000_100),
        channel="voice",
        summary=SUMMARY,
        attributes={"callback": CALLBACK},
    )


# -- what a response shows -------------------------------------------------------------------


def _attributes(customer: common_pb2.Customer) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in customer.attributes.items():
        out[name] = getattr(value, value.WhichOneof("kind"))
    return out


def check_customer(customer: common_pb2.Customer, role: str, where: str) -> None:
    clear = role in CLEAR_ROLES
    contacts = {(c.type, c.value) for c in customer.contacts}
    assert contacts == (CLEAR_CONTACTS if clear else MASKED_CONTACTS), where
    assert _attributes(customer) == (CLEAR_ATTRIBUTES if clear else MASKED_ATTRIBUTES), where


def check_engagement(engagement: profile_pb2.Engagement, role: str, where: str) -> None:
    clear = role in CLEAR_ROLES
    assert engagement.summary == (SUMMARY if clear else MASKED_SUMMARY), where
    assert dict(engagement.attributes) == {"callback": CALLBACK if clear else MASKED_CALLBACK}, (
        where
    )


def check_no_clear_value(message: Message, role: str, where: str) -> None:
    """A role without PII finds no clear value anywhere in the response's bytes."""
    if role in CLEAR_ROLES:
        return
    raw = message.SerializeToString()
    leaked = [s for s in SECRETS if s.encode() in raw]
    assert not leaked, f"{where}: {leaked} in clear"


# -- the calls, by RPC and path: (role -> list of (response, kind)) ---------------------------

Shown = list[tuple[Message, str]]


def _resolve(world: World, token: str, create: bool) -> Shown:
    answer = world.stubs.identity.Resolve(
        identity_pb2.ResolveRequest(
            account=world.account, contact=key("email", EMAIL), create_if_missing=create
        ),
        metadata=auth(token),
        timeout=10,
    )
    assert answer.status == identity_pb2.RESOLVE_STATUS_FOUND
    return [(answer.customer, "customer"), (answer, "bytes")]


def _resolve_national(world: World, token: str) -> Shown:
    # A phone without its country code: no match, the customer holding it with one is suggested.
    answer = world.stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=world.account, contact=key("phone", "(555) 123-4567")),
        metadata=auth(token),
        timeout=10,
    )
    assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND
    return [(answer, "suggestions"), (answer, "bytes")]


def _stream_resolve(world: World, token: str, create: bool) -> Shown:
    requests = [
        identity_pb2.ResolveRequest(account=world.account, contact=c, create_if_missing=create)
        for c in (key("email", EMAIL), key("phone", PHONE))
    ]
    answers = list(
        world.stubs.identity.StreamResolve(iter(requests), metadata=auth(token), timeout=10)
    )
    assert len(answers) == 2
    return [(a.customer, "customer") for a in answers] + [(a, "bytes") for a in answers]


def _batch_resolve(world: World, token: str, create: bool) -> Shown:
    answer = world.stubs.identity.BatchResolve(
        identity_pb2.BatchResolveRequest(
            account=world.account,
            contacts=[key("email", EMAIL), key("phone", PHONE)],
            create_if_missing=create,
        ),
        metadata=auth(token),
        timeout=10,
    )
    assert len(answer.responses) == 2
    return [(r.customer, "customer") for r in answer.responses] + [(answer, "bytes")]


def _link_call(world: World, token: str) -> Shown:
    # The same record again: an upsert that changes nothing.
    answer = _link(
        world.stubs,
        token,
        world.account,
        RECORD_ID,
        key("phone", PHONE),
        key("email", EMAIL),
        key("crm_id", CRM),
        seconds=1,
    )
    return [(answer.customer, "customer"), (answer, "bytes")]


def _merge_keys(world: World, token: str) -> Shown:
    answer = world.stubs.identity.MergeKeys(
        identity_pb2.MergeKeysRequest(
            account=world.account, contacts=[key("phone", PHONE), key("crm_id", CRM)]
        ),
        metadata=auth(token),
        timeout=10,
    )
    return [(answer.customer, "customer"), (answer, "bytes")]


def _set_contact_policy(world: World, token: str) -> Shown:
    answer = world.stubs.identity.SetContactPolicy(
        identity_pb2.SetContactPolicyRequest(
            account=world.account, contact=key("crm_id", CRM), do_not_link=False
        ),
        metadata=auth(token),
        timeout=10,
    )
    return [(answer.customer, "customer"), (answer, "bytes")]


def _explain_chain(world: World, token: str) -> Shown:
    answer = world.stubs.identity.ExplainLink(
        identity_pb2.ExplainLinkRequest(
            account=world.account, contact=key("phone", PHONE), other=key("email", EMAIL)
        ),
        metadata=auth(token),
        timeout=10,
    )
    assert answer.linked
    return [(answer, "hops"), (answer, "bytes")]


def _explain_refused(world: World, token: str) -> Shown:
    answer = world.stubs.identity.ExplainLink(
        identity_pb2.ExplainLinkRequest(account=world.account, contact=key("crm_id", "C-2")),
        metadata=auth(token),
        timeout=10,
    )
    return [(answer, "reasons"), (answer, "bytes")]


def _history(world: World, token: str) -> Shown:
    answer = world.stubs.identity.GetCustomerHistory(
        identity_pb2.GetCustomerHistoryRequest(
            account=world.account, customer_pid=world.customer_pid
        ),
        metadata=auth(token),
        timeout=10,
    )
    assert answer.events
    return [(answer, "bytes")]


def _ingest(world: World, token: str) -> Shown:
    batch = identity_pb2.IngestRequest(
        account=world.account,
        seq=1,
        records=[
            identity_pb2.Record(
                source="crm",
                record_id=INGESTED_RECORD_ID,
                contacts=[key("email", EMAIL), key("crm_id", "C-3")],
                observed_at=Timestamp(seconds=1_700_000_003),
            )
        ],
    )
    acks = list(world.stubs.identity.Ingest(iter([batch]), metadata=auth(token), timeout=10))
    # The refused record is named as the caller sent it: an echo of the request, not stored data.
    assert [r.record_id for a in acks for r in a.refused] == [INGESTED_RECORD_ID]
    return [(a, "bytes") for a in acks]


def _get_customer(world: World, token: str) -> Shown:
    answer = world.stubs.profile.GetCustomer(
        profile_pb2.GetCustomerRequest(account=world.account, customer_pid=world.customer_pid),
        metadata=auth(token),
        timeout=10,
    )
    return [(answer, "customer"), (answer, "bytes")]


def _update_customer(world: World, token: str) -> Shown:
    answer = world.stubs.profile.UpdateCustomer(
        profile_pb2.UpdateCustomerRequest(
            account=world.account,
            customer=common_pb2.Customer(customer_pid=world.customer_pid),
            add_labels=["vip"],
        ),
        metadata=auth(token),
        timeout=10,
    )
    return [(answer, "customer"), (answer, "bytes")]


def _record_engagement(world: World, token: str) -> Shown:
    answer = world.stubs.profile.RecordEngagement(
        _engagement_request(world.account), metadata=auth(token), timeout=10
    )
    return [(answer, "engagement"), (answer, "bytes")]


def _list_journey(world: World, token: str) -> Shown:
    answer = world.stubs.profile.ListJourney(
        profile_pb2.ListJourneyRequest(account=world.account, customer_pid=world.customer_pid),
        metadata=auth(token),
        timeout=10,
    )
    assert answer.engagements
    return [(e, "engagement") for e in answer.engagements] + [(answer, "bytes")]


def _relink_engagement(world: World, token: str) -> Shown:
    answer = world.stubs.profile.RelinkEngagement(
        profile_pb2.RelinkEngagementRequest(
            account=world.account,
            engagement_id=world.engagement_id,
            customer_pid=world.customer_pid,
        ),
        metadata=auth(token),
        timeout=10,
    )
    return [(answer, "engagement"), (answer, "bytes")]


def _watch_changes(world: World, token: str) -> Shown:
    stream = world.stubs.profile.WatchChanges(
        profile_pb2.WatchChangesRequest(account=world.account), metadata=auth(token), timeout=5
    )
    try:
        first = next(iter(stream))
    finally:
        stream.cancel()
    return [(first, "bytes")]


def _export(world: World, token: str) -> Shown:
    answer = world.stubs.admin.ExportCustomer(
        admin_pb2.ExportCustomerRequest(account=world.account, customer_pid=world.customer_pid),
        metadata=auth(token),
        timeout=10,
    )
    data = json.loads(answer.json)
    assert {(c["type"], c["value"]) for c in data["contacts"]} == CLEAR_CONTACTS
    assert RECORD_ID in {r["record_id"] for r in data["records"]}
    return [(answer, "bytes")]


# (case, the minimum role that may call it, the call). "inline": built on the event
# loop; "pool": built after work on the thread pool.
CASES: list[tuple[str, str, Callable[[World, str], Shown]]] = [
    ("Resolve-inline", "reader", lambda w, t: _resolve(w, t, False)),
    ("Resolve-pool", "writer", lambda w, t: _resolve(w, t, True)),
    ("Resolve-suggestions-inline", "reader", _resolve_national),
    ("StreamResolve-inline", "reader", lambda w, t: _stream_resolve(w, t, False)),
    ("StreamResolve-pool", "writer", lambda w, t: _stream_resolve(w, t, True)),
    ("BatchResolve-inline", "reader", lambda w, t: _batch_resolve(w, t, False)),
    ("BatchResolve-pool", "writer", lambda w, t: _batch_resolve(w, t, True)),
    ("Link-pool", "writer", _link_call),
    ("Ingest-pool", "writer", _ingest),
    ("MergeKeys-pool", "agent", _merge_keys),
    ("SetContactPolicy-pool", "agent", _set_contact_policy),
    ("ExplainLink-chain-pool", "reader", _explain_chain),
    ("ExplainLink-refused-pool", "reader", _explain_refused),
    ("GetCustomerHistory-pool", "reader", _history),
    ("GetCustomer-pool", "reader", _get_customer),
    ("UpdateCustomer-pool", "agent", _update_customer),
    ("RecordEngagement-pool", "writer", _record_engagement),
    ("ListJourney-pool", "reader", _list_journey),
    ("RelinkEngagement-pool", "agent", _relink_engagement),
    ("WatchChanges-pool", "reader", _watch_changes),
    ("ExportCustomer-pool", "admin", _export),
]
RANK = {name: i for i, name in enumerate(ROLES)}
# create_if_missing needs a writer: a reader is refused, and must never see a clear value.
CREATES = {"Resolve-pool", "StreamResolve-pool", "BatchResolve-pool"}
# Every role that may call each case (the others are refused: tests/security/test_roles.py),
# and the reader on the creating resolves.
MATRIX = [
    pytest.param(role, case, call, id=f"{case}-{role}")
    for case, minimum, call in CASES
    for role in ROLES
    if RANK[role] >= RANK[minimum] or (case in CREATES and role == "reader")
]


@pytest.mark.parametrize(("role", "case", "call"), MATRIX)
def test_each_role_sees_exactly_what_it_may_on_every_rpc(world, role, case, call):
    where = f"{case} as {role}"
    clear = role in CLEAR_ROLES
    refused = case in CREATES and role == "reader"
    try:
        shown = call(world, world.tokens[role])
    except grpc.RpcError as error:
        if not refused:
            raise
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (where, error.details())
        assert not [s for s in SECRETS if s in error.details()], where
        return
    for message, kind in shown:
        if kind == "customer":
            check_customer(message, role, where)
        elif kind == "engagement":
            check_engagement(message, role, where)
        elif kind == "hops":
            assert [h.record_id for h in message.hops] == [
                RECORD_ID if clear else MASKED_RECORD_ID
            ], where
        elif kind == "suggestions":
            number = PHONE if clear else "+1555*****67"
            assert [(s.customer_pid, s.reason) for s in message.suggestions] == [
                (world.customer_pid, f"NATIONAL_NUMBER: {number}")
            ], where
        elif kind == "reasons":
            record = CONFLICT_RECORD_ID if clear else MASKED_CONFLICT_RECORD_ID
            assert f"CONFLICT: record crm/{record}" in message.reasons, (where, message.reasons)
        check_no_clear_value(message, role, where)
    assert not refused, f"{where}: a reader created customers"


def test_list_isolated_contacts_shows_admins_the_values(stubs, secure_server):
    account = f"mask-iso-{uuid.uuid4().hex[:8]}"
    admin = auth(create_key(secure_server.data, account, "admin"))
    stubs.admin.SetAccountPolicy(
        admin_pb2.SetAccountPolicyRequest(
            account=account,
            policy=common_pb2.AccountPolicy(max_contacts=3, isolate_min_connections=2),
        ),
        metadata=admin,
        timeout=10,
    )
    for i in range(4):
        request = identity_pb2.LinkRequest(
            account=account,
            source="crm",
            record_id=f"hub-{i}",
            contacts=[key("email", "hub@x.com"), key("phone", f"+1555700{i:04d}")],
            observed_at=Timestamp(seconds=1_700_000_000 + i),
        )
        stubs.identity.Link(request, metadata=admin, timeout=10)
    listed = stubs.admin.ListIsolatedContacts(
        admin_pb2.ListIsolatedContactsRequest(account=account), metadata=admin, timeout=10
    )
    assert [c.value for c in listed.contacts] == ["hub@x.com"]


# -- a reader does not create customers -------------------------------------------------------


def _denied(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    assert "writer" in caught.value.details(), caught.value.details()
    return caught.value


def test_a_reader_may_not_create_customers_and_nothing_is_written(world):
    reader, admin = auth(world.tokens["reader"]), auth(world.tokens["admin"])
    new = key("email", f"new-{uuid.uuid4().hex[:8]}@x.com")
    identity = world.stubs.identity
    _denied(
        lambda: identity.Resolve(
            identity_pb2.ResolveRequest(account=world.account, contact=new, create_if_missing=True),
            metadata=reader,
            timeout=10,
        )
    )
    _denied(
        lambda: identity.BatchResolve(
            identity_pb2.BatchResolveRequest(
                account=world.account, contacts=[new], create_if_missing=True
            ),
            metadata=reader,
            timeout=10,
        )
    )
    error = _denied(
        lambda: list(
            identity.StreamResolve(
                iter(
                    [
                        identity_pb2.ResolveRequest(account=world.account, contact=new),
                        identity_pb2.ResolveRequest(
                            account=world.account, contact=new, create_if_missing=True
                        ),
                    ]
                ),
                metadata=reader,
                timeout=10,
            )
        )
    )
    assert error.details().startswith("request 1:")
    metadata = dict(error.trailing_metadata() or ())
    assert metadata.get("idlink-error-field") == "create_if_missing"
    still = identity.Resolve(
        identity_pb2.ResolveRequest(account=world.account, contact=new),
        metadata=admin,
        timeout=10,
    )
    assert still.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND
    # A writer may.
    created = identity.Resolve(
        identity_pb2.ResolveRequest(account=world.account, contact=new, create_if_missing=True),
        metadata=auth(world.tokens["writer"]),
        timeout=10,
    )
    assert created.status == identity_pb2.RESOLVE_STATUS_CREATED


# -- the converters themselves -----------------------------------------------------------------


def test_converters_take_the_viewer_explicitly_and_read_no_ambient_state():
    for fn in (
        convert.contact,
        convert.customer,
        convert.resolution,
        convert.explanation,
        convert.engagement,
        convert.record_id,
        convert.suggestion,
    ):
        viewer = inspect.signature(fn).parameters["viewer"]
        assert viewer.default is inspect.Parameter.empty, fn.__name__
    assert not hasattr(roles, "masked") and not hasattr(roles, "pii_fields")
    # An agent set as the ambient caller changes nothing: the viewer passed decides.
    token = roles.CALLER.set(roles.Principal("key_agent", "a", roles.AGENT))
    try:
        reader = roles.Principal("key_reader", "a", roles.READER, frozenset({"first_name"}))
        shown = convert.contact(ContactView(b"\x01" * 16, "phone", PHONE, "", True), reader)
        assert shown.value == "+1555*****67"
    finally:
        roles.CALLER.reset(token)


def test_no_caller_sees_everything_masked():
    profile = Profile()
    profile.attributes["first_name"] = profiles.encode_value((profiles.STRING, FIRST_NAME))
    profile.attributes["tier"] = profiles.encode_value((profiles.STRING, "gold"))
    view = CustomerView(
        b"\x02" * 16, [ContactView(b"\x01" * 16, "email", EMAIL, "", True)], False, profile
    )
    shown = convert.customer(view, roles.caller())  # nobody admitted in this context
    assert [c.value for c in shown.contacts] == ["j***@company.com"]
    # Without a known caller nothing says which fields are not PII: all are masked.
    assert {n: v.string_value for n, v in shown.attributes.items()} == {
        "first_name": "J****na",
        "tier": "****",
    }
    engagement = convert.engagement(
        EngagementState(engagement_id=b"\x03" * 16, summary=SUMMARY), roles.NOBODY
    )
    assert engagement.summary == MASKED_SUMMARY
    explained = convert.explanation(
        Explanation(
            True,
            b"\x02" * 16,
            [Hop("crm", RECORD_ID, 0, b"\x01" * 16, b"\x04" * 16)],
            ["CONFLICT: record a/b/" + CONFLICT_RECORD_ID],
        ),
        roles.NOBODY,
    )
    assert [h.record_id for h in explained.hops] == [MASKED_RECORD_ID]
    # The whole record id is masked, whatever the source holds.
    assert CONFLICT_RECORD_ID not in explained.reasons[0]
