"""A revoked or flagged key's open streams end; they do not outlive the key (SPEC 8).

Each stream is opened with a deadline of several seconds: a stream that the
server did not end itself would end DEADLINE_EXCEEDED instead of with the
status these tests expect.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from idlink.security import apikeys
from idlink.security.crypto import open_store
from idlink.v1 import admin_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key

from .conftest import auth, link

DEADLINE = 8.0


class Feed:
    """Request messages sent one at a time, as the test puts them."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()

    def send(self, message) -> None:
        self.queue.put(message)

    def close(self) -> None:
        self.queue.put(None)

    def __iter__(self) -> Iterator:
        while True:
            message = self.queue.get(timeout=DEADLINE + 2)
            if message is None:
                return
            yield message


class Reader:
    """Reads a response stream in a thread: the answers and the status it ended with."""

    def __init__(self, call) -> None:
        self.call = call
        self.answers: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for answer in self.call:
                self.answers.put(answer)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.code = exc.code()
            self.details = exc.details() or ""
        finally:
            self.ended.set()

    def next(self):
        return self.answers.get(timeout=DEADLINE)

    def end(self) -> grpc.StatusCode | None:
        self.ended.wait(DEADLINE + 2)
        return self.code


def key_id_of(stubs, admin_token: str, account: str, role: int) -> str:
    keys = stubs.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(account=account), metadata=auth(admin_token)
    )
    return next(k.key_id for k in keys.keys if k.role == role and not k.HasField("revoke_time"))


def resolve_request(account: str, email: str) -> identity_pb2.ResolveRequest:
    return identity_pb2.ResolveRequest(account=account, contact=key("email", email))


def ingest_batch(account: str, seq: int, phone: str) -> identity_pb2.IngestRequest:
    return identity_pb2.IngestRequest(
        account=account,
        seq=seq,
        records=[
            identity_pb2.Record(source="crm", record_id=f"b{seq}", contacts=[key("phone", phone)])
        ],
    )


def test_revoking_a_key_ends_its_open_streams(stubs, account, tokens):
    link(stubs, tokens["admin"], account, "r1", key("email", "rev@x.com"))
    writer = auth(tokens["writer"])
    watch = Reader(
        stubs.profile.WatchChanges(
            profile_pb2.WatchChangesRequest(account=account), metadata=writer, timeout=DEADLINE
        )
    )
    resolves, idle = Feed(), Feed()
    resolving = Reader(
        stubs.identity.StreamResolve(iter(resolves), metadata=writer, timeout=DEADLINE)
    )
    waiting = Reader(stubs.identity.StreamResolve(iter(idle), metadata=writer, timeout=DEADLINE))
    batches = Feed()
    ingesting = Reader(stubs.identity.Ingest(iter(batches), metadata=writer, timeout=DEADLINE))

    # Every stream works before the revocation.
    assert watch.next().events
    resolves.send(resolve_request(account, "rev@x.com"))
    assert resolving.next().status == identity_pb2.RESOLVE_STATUS_FOUND
    idle.send(resolve_request(account, "rev@x.com"))
    assert waiting.next().status == identity_pb2.RESOLVE_STATUS_FOUND
    batches.send(ingest_batch(account, 1, "+15550100001"))
    assert ingesting.next().committed_seq == 1

    stubs.admin.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(
            account=account,
            key_id=key_id_of(stubs, tokens["admin"], account, admin_pb2.ROLE_WRITER),
        ),
        metadata=auth(tokens["admin"]),
    )
    resolves.send(resolve_request(account, "rev@x.com"))
    batches.send(ingest_batch(account, 2, "+15550100002"))
    try:
        # The change feed and the idle stream end by themselves; the others at their next message.
        for reader in (watch, waiting, resolving, ingesting):
            assert reader.end() == grpc.StatusCode.UNAUTHENTICATED, reader.details
            assert "revoked" in reader.details
        assert resolving.answers.empty()  # no answer after the revocation
        assert ingesting.answers.empty()
    finally:
        for feed in (resolves, idle, batches):
            feed.close()
    # Nothing of the batch sent after the revocation was stored.
    answer = stubs.identity.Resolve(
        identity_pb2.ResolveRequest(account=account, contact=key("phone", "+15550100002")),
        metadata=auth(tokens["admin"]),
    )
    assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND
    # And the key opens no new stream.
    with pytest.raises(grpc.RpcError) as caught:
        next(
            stubs.profile.WatchChanges(
                profile_pb2.WatchChangesRequest(account=account), metadata=writer, timeout=DEADLINE
            )
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_key_revoked_by_another_process_loses_its_change_feed(
    secure_server, stubs, account, tokens
):
    link(stubs, tokens["admin"], account, "r1", key("email", "cli@x.com"))
    watch = Reader(
        stubs.profile.WatchChanges(
            profile_pb2.WatchChangesRequest(account=account),
            metadata=auth(tokens["reader"]),
            timeout=DEADLINE,
        )
    )
    assert watch.next().events
    reader_id = key_id_of(stubs, tokens["admin"], account, admin_pb2.ROLE_READER)
    # As `idlink keys` would: straight into the store, the server is not told.
    with open_store(secure_server.data, multi_process=True) as store:
        store.write(lambda txn: apikeys.revoke(txn, account, reader_id))
    assert watch.end() == grpc.StatusCode.UNAUTHENTICATED, watch.details


def test_a_flagged_key_loses_its_open_reads_but_keeps_ingesting(stubs, account, tokens):
    stubs.admin.SetSecurityPolicy(
        admin_pb2.SetSecurityPolicyRequest(
            account=account,
            policy=admin_pb2.SecurityPolicy(anomaly_max_customers=2, anomaly_window_seconds=60),
        ),
        metadata=auth(tokens["admin"]),
    )
    for i in range(3):
        link(stubs, tokens["admin"], account, f"r{i}", key("email", f"f{i}@x.com"))
    writer = auth(tokens["writer"])
    watch = Reader(
        stubs.profile.WatchChanges(
            profile_pb2.WatchChangesRequest(account=account), metadata=writer, timeout=DEADLINE
        )
    )
    resolves, batches = Feed(), Feed()
    resolving = Reader(
        stubs.identity.StreamResolve(iter(resolves), metadata=writer, timeout=DEADLINE)
    )
    ingesting = Reader(stubs.identity.Ingest(iter(batches), metadata=writer, timeout=DEADLINE))
    assert watch.next().events
    resolves.send(resolve_request(account, "f0@x.com"))
    assert resolving.next().status == identity_pb2.RESOLVE_STATUS_FOUND
    try:
        # Another call of the same key reads more customers: the third is refused, the key flagged.
        stubs.identity.Resolve(resolve_request(account, "f1@x.com"), metadata=writer)
        with pytest.raises(grpc.RpcError) as caught:
            stubs.identity.Resolve(resolve_request(account, "f2@x.com"), metadata=writer)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert watch.end() == grpc.StatusCode.RESOURCE_EXHAUSTED, watch.details
        assert "anomaly" in watch.details
        resolves.send(resolve_request(account, "f0@x.com"))
        assert resolving.end() == grpc.StatusCode.RESOURCE_EXHAUSTED, resolving.details
        assert resolving.answers.empty()
        # Writes are not reads of customer data: the flagged key's ingest goes on.
        batches.send(ingest_batch(account, 1, "+15550200001"))
        assert ingesting.next().committed_seq == 1
    finally:
        for feed in (resolves, batches):
            feed.close()
    assert ingesting.end() == grpc.StatusCode.OK
