"""Kept resolve responses: the customers they show, and one response per masking class.

The auth interceptor counts and audits the customers a response shows; for a
response kept by ``convert.shared_resolution`` it takes them from the answer's
raw PIDs (``convert.shown_pids``) instead of parsing the response. Both must
name the same customers in the same order, for every kind of viewer.
"""

from __future__ import annotations

import os

import pytest

from idlink.domain.views import (
    FOUND,
    NOT_FOUND,
    ContactView,
    CustomerView,
    Resolution,
    Suggestion,
)
from idlink.security.roles import ADMIN, AGENT, READER, WRITER, Principal
from idlink.service import convert, encoded
from idlink.service.auth import customer_pids
from idlink.store.txn import Profile
from idlink.v1 import identity_pb2

VIEWERS = [
    Principal("k_admin", "acme", ADMIN),
    Principal("k_agent", "acme", AGENT),
    Principal("k_writer", "acme", WRITER, frozenset({"name"})),
    Principal("k_reader", "acme", READER, frozenset({"name"})),
    Principal("k_reader_all", "acme", READER),
    Principal("", "", 0),
]


def _pid() -> bytes:
    return os.urandom(16)


def _answers() -> list[Resolution]:
    member = ContactView(_pid(), "phone", "+447700900123", "crm", True, "", 1)
    customer = CustomerView(_pid(), [member], False, Profile())
    suggestions = [
        Suggestion(_pid(), "NATIONAL_NUMBER: +447700900124", 1.0),
        Suggestion(_pid(), "SHARED_RECORD", 2.0),
    ]
    return [
        Resolution(FOUND, member.pid, customer),
        Resolution(FOUND, member.pid, customer, suggestions),
        Resolution(NOT_FOUND, _pid(), None, suggestions, "no customer holds this contact"),
        Resolution(NOT_FOUND, _pid(), None, [], "no customer holds this contact"),
    ]


@pytest.mark.parametrize("viewer", VIEWERS, ids=lambda v: v.key_id or "nobody")
def test_a_kept_response_shows_the_customers_its_message_names(viewer):
    for answer in _answers():
        response = convert.shared_resolution(answer, viewer)
        assert convert.shown_pids(response) == tuple(customer_pids(response))
        assert response == convert.resolution(answer, viewer)
        assert convert.shared_resolution(answer, viewer) is response  # kept


def test_a_response_not_kept_shows_nothing_from_the_side_table():
    answer = _answers()[1]
    fresh = convert.resolution(answer, VIEWERS[0])
    assert convert.shown_pids(fresh) is None
    assert convert.shown_pids(identity_pb2.ResolveResponse()) is None
    assert len(customer_pids(fresh)) == 3


def test_viewers_of_different_masking_never_share_a_kept_response():
    answer = _answers()[0]
    admin = convert.shared_resolution(answer, VIEWERS[0])
    reader = convert.shared_resolution(answer, VIEWERS[3])
    assert admin is not reader
    assert admin.customer.contacts[0].value == "+447700900123"
    assert reader.customer.contacts[0].value != "+447700900123"
    # Same masking class (both see PII): the same message.
    assert convert.shared_resolution(answer, VIEWERS[1]) is admin


def test_pid_strings_are_the_uuid_module_s():
    import uuid

    for _ in range(1000):
        pid = os.urandom(16)
        assert convert.pid_str(pid) == str(uuid.UUID(bytes=pid))
    assert convert.pid_str(b"") == ""
    with pytest.raises(ValueError):
        convert.pid_str(b"short")


@pytest.mark.parametrize("viewer", VIEWERS, ids=lambda v: v.key_id or "nobody")
def test_a_batch_of_kept_responses_shows_the_customers_its_message_names(viewer):
    answers = _answers() * 3
    responses = convert.shared_resolutions(answers, viewer)
    assert responses == [convert.shared_resolution(a, viewer) for a in answers]
    batch = convert.batch_resolution(responses)
    # Sent as its responses' kept encodings: exactly the bytes of the message built.
    built = identity_pb2.BatchResolveResponse(responses=responses)
    assert batch.SerializeToString() == built.SerializeToString()
    message = encoded.decoded(batch)
    assert list(message.responses) == responses
    assert convert.shown_pids(batch) == tuple(customer_pids(message))
    # The same responses again: the same bytes (each response's encoding is kept).
    again = convert.batch_resolution(responses)
    assert again.SerializeToString() == built.SerializeToString()


def test_the_method_serializer_sends_an_encoded_message_as_it_is():
    plain = identity_pb2.BatchResolveResponse.SerializeToString
    serialize = encoded.serializer(plain)
    assert encoded.serializer(serialize) is serialize  # wrapped once, whatever the layers
    assert encoded.serializer(None) is None
    message = identity_pb2.BatchResolveResponse(responses=[identity_pb2.ResolveResponse()])
    assert serialize(message) == message.SerializeToString()
    sent = encoded.Encoded(b"raw", identity_pb2.BatchResolveResponse, ())
    assert serialize(sent) == b"raw"
