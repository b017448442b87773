"""Anomaly detection counts every customer an answer reveals, before it is sent (SPEC 8).

With a threshold of N distinct customers, a key gets at most N, whatever the
RPC: the answer that would reveal customer N + 1 is refused with
RESOURCE_EXHAUSTED, the key is flagged and audited, and every later read of
that key is refused until an admin clears the flag. A batch is refused whole
(docs/security.md, "Anomaly detection").
"""

from __future__ import annotations

import grpc
import pytest

from idlink.v1 import admin_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key

from .conftest import auth

THRESHOLD = 5
CUSTOMERS = 60


def email(i: int) -> str:
    return f"count{i}@x.com"


@pytest.fixture
def crowd(stubs, account, tokens) -> list[str]:
    """CUSTOMERS customers of one email each, and the account's threshold set to THRESHOLD."""
    batch = identity_pb2.IngestRequest(
        account=account,
        seq=1,
        records=[
            identity_pb2.Record(source="crm", record_id=f"c{i}", contacts=[key("email", email(i))])
            for i in range(CUSTOMERS)
        ],
    )
    list(stubs.identity.Ingest(iter([batch]), metadata=auth(tokens["admin"]), timeout=30))
    pids = []
    for i in range(CUSTOMERS):
        answer = stubs.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("email", email(i))),
            metadata=auth(tokens["admin"]),
        )
        pids.append(answer.customer.customer_pid)
    stubs.admin.SetSecurityPolicy(
        admin_pb2.SetSecurityPolicyRequest(
            account=account,
            policy=admin_pb2.SecurityPolicy(
                anomaly_max_customers=THRESHOLD, anomaly_window_seconds=600
            ),
        ),
        metadata=auth(tokens["admin"]),
    )
    assert len(set(pids)) == CUSTOMERS
    return pids


def reader_key(stubs, account, tokens) -> admin_pb2.ApiKey:
    keys = stubs.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(account=account), metadata=auth(tokens["admin"])
    )
    return next(k for k in keys.keys if k.role == admin_pb2.ROLE_READER)


def audit_events(stubs, account, tokens, key_id: str):
    return stubs.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(account=account, key_id=key_id, page_size=1000),
        metadata=auth(tokens["admin"]),
    ).events


def assert_throttled(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "anomaly" in error.details() and f"threshold {THRESHOLD}" in error.details()


def test_one_stream_reveals_at_most_the_threshold_and_flags_the_key(stubs, account, tokens, crowd):
    requests = (
        identity_pb2.ResolveRequest(account=account, contact=key("email", email(i)))
        for i in range(CUSTOMERS)
    )
    answers = []
    with pytest.raises(grpc.RpcError) as caught:
        for answer in stubs.identity.StreamResolve(
            requests, metadata=auth(tokens["reader"]), timeout=30
        ):
            answers.append(answer)
    assert_throttled(caught.value)
    assert [a.customer.customer_pid for a in answers] == crowd[:THRESHOLD]
    reader = reader_key(stubs, account, tokens)
    assert reader.flagged and "6 distinct customers" in reader.flag_reason
    events = audit_events(stubs, account, tokens, reader.key_id)
    assert [e.outcome for e in events if e.method == "anomaly"] == ["FLAGGED"]
    # Audited answer by answer: the customers it was given, and no more.
    served = [p for e in events if e.outcome == "OK" for p in e.customer_pids]
    assert served == crowd[:THRESHOLD]
    # Every later read of the key is refused.
    with pytest.raises(grpc.RpcError) as caught:
        stubs.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("email", email(0))),
            metadata=auth(tokens["reader"]),
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_batch_over_the_threshold_is_refused_whole(stubs, account, tokens, crowd):
    reader = auth(tokens["reader"])
    # Within the threshold, and a customer asked twice costs once.
    small = stubs.identity.BatchResolve(
        identity_pb2.BatchResolveRequest(
            account=account,
            contacts=[key("email", email(i)) for i in (0, 1, 2, 0, 1, 2, 3)],
        ),
        metadata=reader,
    )
    assert len(small.responses) == 7
    with pytest.raises(grpc.RpcError) as caught:
        stubs.identity.BatchResolve(
            identity_pb2.BatchResolveRequest(
                account=account, contacts=[key("email", email(i)) for i in range(CUSTOMERS)]
            ),
            metadata=reader,
        )
    assert_throttled(caught.value)
    assert not any(pid in caught.value.details() for pid in crowd)
    flagged = reader_key(stubs, account, tokens)
    assert flagged.flagged and "60 distinct customers" in flagged.flag_reason


def test_explain_history_journey_and_profiles_are_counted_and_audited(
    stubs, account, tokens, crowd
):
    reader = auth(tokens["reader"])
    calls = [
        lambda: stubs.identity.ExplainLink(
            identity_pb2.ExplainLinkRequest(account=account, contact=key("email", email(0))),
            metadata=reader,
        ),
        lambda: stubs.identity.ExplainLink(
            identity_pb2.ExplainLinkRequest(account=account, contact=key("email", email(1))),
            metadata=reader,
        ),
        lambda: stubs.identity.GetCustomerHistory(
            identity_pb2.GetCustomerHistoryRequest(account=account, customer_pid=crowd[2]),
            metadata=reader,
        ),
        lambda: stubs.profile.ListJourney(
            profile_pb2.ListJourneyRequest(account=account, customer_pid=crowd[3]),
            metadata=reader,
        ),
        lambda: stubs.profile.GetCustomer(
            profile_pb2.GetCustomerRequest(account=account, customer_pid=crowd[4]),
            metadata=reader,
        ),
    ]
    for call in calls:
        call()
    # The same customers again cost nothing more.
    for call in calls:
        call()
    # A sixth customer, through ExplainLink: refused.
    with pytest.raises(grpc.RpcError) as caught:
        stubs.identity.ExplainLink(
            identity_pb2.ExplainLinkRequest(account=account, contact=key("email", email(5))),
            metadata=reader,
        )
    assert_throttled(caught.value)
    assert crowd[5] not in caught.value.details()
    # Flagged: ExplainLink and history are refused as every other read.
    for call in calls[:3]:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reader_id = reader_key(stubs, account, tokens).key_id
    events = audit_events(stubs, account, tokens, reader_id)
    explained = [e for e in events if e.method.endswith("/ExplainLink") and e.outcome == "OK"]
    assert [e.customer_pids for e in explained] == [[crowd[0]], [crowd[1]]] * 2
    history = [e for e in events if e.method.endswith("/GetCustomerHistory")]
    assert [e.customer_pids for e in history if e.outcome == "OK"] == [[crowd[2]]] * 2


def test_clearing_the_flag_lets_the_key_read_again(stubs, account, tokens, crowd):
    reader = auth(tokens["reader"])
    with pytest.raises(grpc.RpcError):
        stubs.identity.BatchResolve(
            identity_pb2.BatchResolveRequest(
                account=account, contacts=[key("email", email(i)) for i in range(10)]
            ),
            metadata=reader,
        )
    flagged = reader_key(stubs, account, tokens)
    assert flagged.flagged
    stubs.admin.ClearKeyFlag(
        admin_pb2.ClearKeyFlagRequest(account=account, key_id=flagged.key_id),
        metadata=auth(tokens["admin"]),
    )
    answer = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=account, contact=key("email", email(9))),
        metadata=reader,
    )
    assert answer.customer.customer_pid == crowd[9]
