"""Streams are audited as they go, answer by answer, not when they close (SPEC 8).

A stream that never closes, or a server killed under it, must still leave the
reads it answered in the audit log.
"""

from __future__ import annotations

import queue

from idlink.v1 import admin_pb2, identity_pb2
from tests.service.conftest import key

from .conftest import auth, link

READS = 30


def feed() -> tuple[queue.Queue, object]:
    pending: queue.Queue = queue.Queue()

    def requests():
        while (message := pending.get(timeout=30)) is not None:
            yield message

    return pending, requests()


def events(stubs, account, admin_token, method: str):
    listed = stubs.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(account=account, page_size=1000),
        metadata=auth(admin_token),
    ).events
    return [e for e in listed if e.method == "/idlink.v1.IdentityService/" + method]


def test_stream_resolve_answers_are_audited_while_the_stream_is_open(stubs, account, tokens):
    pids = [
        link(
            stubs, tokens["admin"], account, f"r{i}", key("email", f"s{i}@x.com")
        ).customer.customer_pid
        for i in range(READS)
    ]
    pending, requests = feed()
    answers = stubs.identity.StreamResolve(requests, metadata=auth(tokens["reader"]), timeout=30)
    try:
        for i in range(READS):
            pending.put(
                identity_pb2.ResolveRequest(account=account, contact=key("email", f"s{i}@x.com"))
            )
            assert next(answers).customer.customer_pid == pids[i]
        # The stream is still open: every answer it gave is in the log already.
        audited = events(stubs, account, tokens["admin"], "StreamResolve")
        assert [e.outcome for e in audited] == ["OK"] * READS
        assert [e.customer_pids for e in audited] == [[pid] for pid in pids]
        assert {e.role for e in audited} == {"reader"}
    finally:
        pending.put(None)
        answers.cancel()


def test_ingest_batches_are_audited_as_they_are_acknowledged(stubs, account, tokens):
    pending, requests = feed()
    acks = stubs.identity.Ingest(requests, metadata=auth(tokens["writer"]), timeout=30)
    try:
        for seq in (1, 2, 3):
            pending.put(
                identity_pb2.IngestRequest(
                    account=account,
                    seq=seq,
                    records=[
                        identity_pb2.Record(
                            source="crm",
                            record_id=f"i{seq}",
                            contacts=[key("email", f"i{seq}@x.com")],
                        )
                    ],
                )
            )
            assert next(acks).committed_seq == seq
        audited = events(stubs, account, tokens["admin"], "Ingest")
        assert [e.detail for e in audited] == [f"seq {seq}: 1 records" for seq in (1, 2, 3)]
    finally:
        pending.put(None)
        acks.cancel()
