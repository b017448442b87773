"""The Python client against a real server: every wrapped call, errors, retries, the token."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from concurrent import futures

import grpc
import pytest

from idlink.client import IdlinkClient, IdlinkError
from idlink.v1 import common_pb2, identity_pb2, identity_pb2_grpc, profile_pb2
from tests.server import free_port

FOUND = identity_pb2.RESOLVE_STATUS_FOUND
CREATED = identity_pb2.RESOLVE_STATUS_CREATED
NOT_FOUND = identity_pb2.RESOLVE_STATUS_NOT_FOUND
APPLIED = common_pb2.RECORD_OUTCOME_APPLIED


def values(customer: common_pb2.Customer) -> set[str]:
    return {c.value for c in customer.contacts}


def test_link_then_resolve_finds_one_customer(idlink, account):
    linked = idlink.link(
        account,
        "crm",
        "42",
        [("phone", "+1 (555) 123-4567"), ("email", "John.Smith@company.com"), ("id", "C-42", "sf")],
        observed_at=dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC),
    )
    assert linked.outcome == APPLIED
    answer = idlink.resolve(account, "email", "john.smith@company.com")
    assert answer.status == FOUND
    assert answer.customer.customer_pid == linked.customer.customer_pid
    assert values(answer.customer) == {"+15551234567", "john.smith@company.com", "C-42"}
    assert idlink.resolve(account, "id", "C-42", "sf").status == FOUND
    assert idlink.resolve(account, "id", "C-42", "zendesk").status == NOT_FOUND


def test_resolve_creates_when_asked(idlink, account):
    assert idlink.resolve(account, "device", "web-1").status == NOT_FOUND
    created = idlink.resolve(account, "device", "web-1", create_if_missing=True)
    assert created.status == CREATED
    assert created.customer.anonymous
    assert idlink.resolve(account, "device", "web-1", create_if_missing=True).status == FOUND


def test_batch_resolve_answers_in_request_order(idlink, account):
    idlink.link(account, "crm", "1", [("phone", "+15550000001"), ("email", "a@x.com")])
    contacts = [("email", "nobody@x.com"), ("phone", "+1 555 000 0001"), ("email", "A@x.com")]
    answers = idlink.batch_resolve(account, contacts * 400)  # 1200: two calls
    assert len(answers) == 1200
    assert [a.status for a in answers[:3]] == [NOT_FOUND, FOUND, FOUND]
    assert answers[1].customer.customer_pid == answers[1199].customer.customer_pid


def test_merge_keys_then_delete_record_unmerges(idlink, account):
    idlink.link(account, "crm", "1", [("phone", "+15550000011")])
    idlink.link(account, "shop", "9", [("email", "b@x.com")])
    merged = idlink.merge_keys(account, [("phone", "+15550000011"), ("email", "b@x.com")])
    assert values(merged.customer) == {"+15550000011", "b@x.com"}
    # The same request id again is the same manual record, not a second one.
    again = idlink.merge_keys(
        account, [("phone", "+15550000011"), ("email", "b@x.com")], request_id=merged.record_id
    )
    assert again.record_id == merged.record_id
    idlink.delete_record(account, merged.source, merged.record_id)
    answer = idlink.resolve(account, "email", "b@x.com")
    assert values(answer.customer) == {"b@x.com"}


def test_delete_record_of_unknown_record_is_not_found(idlink, account):
    with pytest.raises(IdlinkError) as caught:
        idlink.delete_record(account, "crm", "missing")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_get_customer_and_old_pid_redirects(idlink, account):
    first = idlink.link(account, "crm", "1", [("phone", "+15550000021")]).customer
    second = idlink.link(account, "crm", "2", [("email", "c@x.com")]).customer
    idlink.link(account, "crm", "3", [("phone", "+15550000021"), ("email", "c@x.com")])
    survivor = idlink.get_customer(account, first.customer_pid)
    assert values(survivor) == {"+15550000021", "c@x.com"}
    redirected = idlink.get_customer(account, second.customer_pid)
    assert redirected.customer_pid == first.customer_pid
    assert redirected.redirected_from == second.customer_pid


def test_list_journey_iterates_pages(idlink, account):
    customer = idlink.link(account, "crm", "1", [("phone", "+15550000031")]).customer
    for i in range(5):
        idlink.profile.RecordEngagement(
            profile_pb2.RecordEngagementRequest(
                account=account,
                contact=common_pb2.ContactKey(type="phone", value="+15550000031"),
                channel="voice",
                summary=f"call {i}",
            ),
            metadata=idlink.metadata,
            timeout=5,
        )
    pages = list(idlink.list_journey(account, customer.customer_pid, page_size=2))
    assert [len(p.engagements) for p in pages] == [2, 2, 1]
    assert [e.summary for p in pages for e in p.engagements] == [f"call {i}" for i in range(5)]


def test_watch_changes_replays_the_feed(idlink, account):
    created = idlink.link(account, "crm", "1", [("phone", "+15550000041")]).customer
    feed = idlink.watch_changes(account, 0)
    try:
        first = next(feed)
    finally:
        feed.close()
    assert first.seq == 1
    assert first.kind == common_pb2.CHANGE_KIND_CREATED
    assert first.customer_pid == created.customer_pid


def test_a_malformed_request_is_an_error_naming_the_field(idlink, account):
    with pytest.raises(IdlinkError) as caught:
        idlink.resolve(account, "fax", "123")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field == "contact.type"


def test_no_server_gives_unavailable_after_bounded_retries():
    started = time.monotonic()
    target = f"127.0.0.1:{free_port()}"
    with (
        IdlinkClient(target, "t", timeout=0.5, retries=2) as client,
        pytest.raises(IdlinkError) as caught,
    ):
        client.resolve("a", "phone", "+15551234567")
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert time.monotonic() - started < 10


class FlakyIdentity(identity_pb2_grpc.IdentityServiceServicer):
    """Answers UNAVAILABLE a few times, then FOUND; remembers the metadata of each call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def _answer(self, context):
        with self.lock:
            self.calls.append(dict(context.invocation_metadata()))
            if len(self.calls) <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    def Resolve(self, request, context):
        self._answer(context)
        return identity_pb2.ResolveResponse(status=FOUND, contact_pid="p")

    def Link(self, request, context):
        self._answer(context)
        return identity_pb2.LinkResponse(outcome=APPLIED)


@pytest.fixture
def flaky():
    servicer = FlakyIdentity(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None).wait()


def test_reads_are_retried_with_the_token_on_every_attempt(flaky):
    servicer, target = flaky
    with IdlinkClient(target, "idl_secret", retries=3) as client:
        assert client.resolve("a", "phone", "+15551234567").status == FOUND
    assert len(servicer.calls) == 3
    assert all(call["authorization"] == "Bearer idl_secret" for call in servicer.calls)


def test_writes_are_retried_with_one_request_id(flaky):
    servicer, target = flaky
    with IdlinkClient(target, "idl_secret") as client:
        assert client.link("a", "crm", "1", [("phone", "+15551234567")]).outcome == APPLIED
    assert len(servicer.calls) == 3


def test_retries_give_up_after_the_limit(flaky):
    servicer, target = flaky
    with IdlinkClient(target, retries=1) as client, pytest.raises(IdlinkError) as caught:
        client.resolve("a", "phone", "+15551234567")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.calls) == 2
    assert all("authorization" not in call for call in servicer.calls)


def test_ingest_numbers_batches_and_returns_the_last_acknowledged(idlink, account):
    records = (
        identity_pb2.Record(
            source="crm",
            record_id=str(i),
            contacts=[common_pb2.ContactKey(type="email", value=f"u{i // 2}@x.com")],
        )
        for i in range(1050)
    )
    acks = []
    assert idlink.ingest(account, records, batch_size=100, on_ack=acks.append) == 11
    assert sum(a.records for a in acks) == 1050
    answer = idlink.resolve(account, "email", "u524@x.com")
    assert answer.status == FOUND


def test_ingest_reports_a_refused_batch(idlink, account):
    def records():
        for i in itertools.count():
            contact_type = "fax" if i == 150 else "email"
            yield identity_pb2.Record(
                source="crm",
                record_id=str(i),
                contacts=[common_pb2.ContactKey(type=contact_type, value=f"v{i}@x.com")],
            )
            if i == 199:
                return

    with pytest.raises(IdlinkError) as caught:
        idlink.ingest(account, records(), batch_size=100)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("batch seq 2:")
    assert caught.value.field.startswith("records[50]")
