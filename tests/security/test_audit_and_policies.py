"""Audit log, anomaly throttling, free-text redaction, retention, keys made on the command line."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

from idlink.security.redaction import luhn_ok, redact
from idlink.v1 import admin_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key

from .conftest import auth, link


def audit(stubs, token, account, **filters):
    return stubs.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(account=account, **filters), metadata=auth(token)
    )


def test_reads_and_changes_are_audited_by_key_id_with_filters_and_paging(stubs, account, tokens):
    customer = link(stubs, tokens["admin"], account, "r1", key("email", "aud@x.com")).customer
    for _ in range(3):
        stubs.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("email", "aud@x.com")),
            metadata=auth(tokens["reader"]),
        )
    keys = stubs.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(account=account), metadata=auth(tokens["admin"])
    )
    reader_id = next(k.key_id for k in keys.keys if k.role == admin_pb2.ROLE_READER)
    everything = audit(stubs, tokens["admin"], account)
    methods = [e.method.rsplit("/", 1)[-1] for e in everything.events]
    assert "Link" in methods and methods.count("Resolve") == 3
    reads = audit(stubs, tokens["admin"], account, key_id=reader_id)
    assert [e.outcome for e in reads.events] == ["OK"] * 3
    assert all(
        e.customer_pids == [customer.customer_pid] and e.role == "reader" for e in reads.events
    )
    assert all(tokens["reader"] not in str(e) for e in everything.events)
    first = audit(stubs, tokens["admin"], account, key_id=reader_id, page_size=2)
    assert len(first.events) == 2 and first.next_page_token
    rest = audit(
        stubs, tokens["admin"], account, key_id=reader_id, page_token=first.next_page_token
    )
    assert [e.seq for e in [*first.events, *rest.events]] == [e.seq for e in reads.events]
    by_customer = audit(stubs, tokens["admin"], account, customer_pid=customer.customer_pid)
    assert len(by_customer.events) >= 4
    later = admin_pb2.ListAuditEventsRequest(account=account)
    later.start_time.FromSeconds(int(time.time()) + 3600)
    assert not stubs.admin.ListAuditEvents(later, metadata=auth(tokens["admin"])).events


def test_a_key_reading_too_many_customers_is_flagged_and_throttled_until_cleared(
    stubs, account, tokens
):
    stubs.admin.SetSecurityPolicy(
        admin_pb2.SetSecurityPolicyRequest(
            account=account,
            policy=admin_pb2.SecurityPolicy(anomaly_max_customers=3, anomaly_window_seconds=60),
        ),
        metadata=auth(tokens["admin"]),
    )
    for i in range(5):
        link(stubs, tokens["admin"], account, f"r{i}", key("email", f"p{i}@x.com"))

    def read(i):
        return stubs.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("email", f"p{i}@x.com")),
            metadata=auth(tokens["reader"]),
        )

    for i in range(3):
        read(i)
    # The read that would reveal a fourth customer is refused, not answered.
    with pytest.raises(grpc.RpcError) as caught:
        read(3)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "anomaly" in caught.value.details() and "threshold 3" in caught.value.details()
    flagged = [e for e in audit(stubs, tokens["admin"], account).events if e.outcome == "FLAGGED"]
    assert len(flagged) == 1 and "4 distinct customers" in flagged[0].detail
    keys = stubs.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(account=account), metadata=auth(tokens["admin"])
    )
    reader = next(k for k in keys.keys if k.role == admin_pb2.ROLE_READER)
    assert reader.flagged
    cleared = stubs.admin.ClearKeyFlag(
        admin_pb2.ClearKeyFlagRequest(account=account, key_id=reader.key_id),
        metadata=auth(tokens["admin"]),
    )
    assert not cleared.flagged
    assert read(4).status == identity_pb2.RESOLVE_STATUS_FOUND


def test_engagement_text_is_redacted_when_the_account_asks(stubs, account, tokens):
    text = (
        "Call back on +1 415 555 2671 or mail jan.k@example.com; "
        "card 4111 1111 1111 1111, ref 12345"
    )

    def record():
        return stubs.profile.RecordEngagement(
            profile_pb2.RecordEngagementRequest(
                account=account,
                contact=key("email", "red@x.com"),
                channel="chat",
                summary=text,
                attributes={"note": "paid with 5500 0000 0000 0004"},
            ),
            metadata=auth(tokens["agent"]),
        )

    assert record().summary == text
    stubs.admin.SetSecurityPolicy(
        admin_pb2.SetSecurityPolicyRequest(
            account=account, policy=admin_pb2.SecurityPolicy(redact_free_text=True)
        ),
        metadata=auth(tokens["admin"]),
    )
    redacted = record()
    assert redacted.summary == "Call back on [PHONE] or mail [EMAIL]; card [CARD], ref 12345"
    assert redacted.attributes["note"] == "paid with [CARD]"


def test_redaction_rules():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert redact("order 4111 1111 1111 1112 shipped") == "order 4111 1111 1111 1112 shipped"
    assert redact("ring 020 7946 0958 today", "GB") == "ring [PHONE] today"
    assert redact("no personal data here") == "no personal data here"


def test_retention_deletes_old_engagements_on_demand(stubs, account, tokens):
    def record(seconds_ago):
        request = profile_pb2.RecordEngagementRequest(
            account=account, contact=key("phone", "+15550004444"), channel="voice"
        )
        request.occurred_at.FromSeconds(int(time.time()) - seconds_ago)
        return stubs.profile.RecordEngagement(request, metadata=auth(tokens["admin"]))

    record(3 * 86400)
    kept = record(60)
    stubs.admin.SetSecurityPolicy(
        admin_pb2.SetSecurityPolicyRequest(
            account=account, policy=admin_pb2.SecurityPolicy(engagement_retention_seconds=86400)
        ),
        metadata=auth(tokens["admin"]),
    )
    swept = stubs.admin.ApplyRetention(
        admin_pb2.ApplyRetentionRequest(account=account), metadata=auth(tokens["admin"])
    )
    assert swept.engagements_deleted == 1 and swept.customers_erased == 0
    customer = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=account, contact=key("phone", "+15550004444")),
        metadata=auth(tokens["admin"]),
    ).customer
    journey = stubs.profile.ListJourney(
        profile_pb2.ListJourneyRequest(account=account, customer_pid=customer.customer_pid),
        metadata=auth(tokens["admin"]),
    )
    assert [e.engagement_id for e in journey.engagements] == [kept.engagement_id]


def test_retention_erases_inactive_customers(stubs, account, tokens):
    link(stubs, tokens["admin"], account, "old", key("email", "old@x.com"))
    stubs.admin.SetSecurityPolicy(
        admin_pb2.SetSecurityPolicyRequest(
            account=account, policy=admin_pb2.SecurityPolicy(inactive_customer_retention_seconds=1)
        ),
        metadata=auth(tokens["admin"]),
    )
    time.sleep(1.2)
    swept = stubs.admin.ApplyRetention(
        admin_pb2.ApplyRetentionRequest(account=account), metadata=auth(tokens["admin"])
    )
    assert swept.customers_erased == 1
    answer = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=account, contact=key("email", "old@x.com")),
        metadata=auth(tokens["admin"]),
    )
    assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND


def test_keys_create_works_while_the_server_runs(secure_server, stubs, account):
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "idlink.cli",
            "keys",
            "create",
            "--data",
            str(secure_server.data),
            "--account",
            account,
            "--role",
            "writer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = made.stdout.strip()
    assert token.startswith("idl_")
    assert link(stubs, token, account, "r1", key("email", "cli@x.com")).customer.customer_pid
    assert token.encode() not in b"".join(p.read_bytes() for p in secure_server.data.glob("*.mdb"))
