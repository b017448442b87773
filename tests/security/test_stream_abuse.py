"""Refused, cancelled and abandoned streams cannot take the server down (SPEC 8, 9).

A client that reads the first answer of a stream and then abandons it until
its deadline, mixed with refused and cancelled streams, once crashed the
server (SIGSEGV): the stream wrapper's clean-up ran after gRPC had freed the
call and touched its context. Thousands of such streams, on every streaming
RPC, go against one server here; it must still be alive and healthy, serve a
normal call, give back every stream slot, and have logged no traceback and no
fatal error.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from idlink.security.apikeys import create_key
from idlink.v1 import identity_pb2, identity_pb2_grpc, profile_pb2, profile_pb2_grpc
from tests.service.conftest import ServerProcess, key

from .conftest import auth

# Bounded: 3,000 streams take about ten seconds on two cores.
STREAMS = int(os.environ.get("IDLINK_STREAM_ABUSE_STREAMS", "3000"))
WORKERS = 8
DEADLINE = 0.3
PER_KEY = 8
ABANDONED_PER_WORKER = 4


@pytest.fixture(scope="module")
def abused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("abuse") / "data"
    with pytest.MonkeyPatch.context() as patch:
        # A crash in gRPC's core then shows in the log with Python's stacks.
        patch.setenv("PYTHONFAULTHANDLER", "1")
        running = ServerProcess(data, "--max-streams-per-key", str(PER_KEY)).start()
    yield running
    running.stop()


def held(first: list, release: threading.Event, hold: float = 2.0) -> Iterator:
    """Requests for a stream that stays open: the first ones, then nothing until released."""
    yield from first
    release.wait(hold)


def test_thousands_of_refused_cancelled_and_abandoned_streams_leave_the_server_healthy(abused):
    account, other = f"abuse-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    tokens = [create_key(abused.data, account, "writer") for _ in range(WORKERS)]
    stranger = create_key(abused.data, other, "admin")
    channel = grpc.insecure_channel(abused.target)
    identity = identity_pb2_grpc.IdentityServiceStub(channel)
    profile = profile_pb2_grpc.ProfileServiceStub(channel)
    email = key("email", "abuse@x.com")
    identity.Link(
        identity_pb2.LinkRequest(account=account, source="crm", record_id="r1", contacts=[email]),
        metadata=auth(tokens[0]),
        timeout=10,
    )
    release = threading.Event()
    resolve = identity_pb2.ResolveRequest(account=account, contact=email)
    foreign = identity_pb2.ResolveRequest(account=other, contact=email)
    watch = profile_pb2.WatchChangesRequest(account=account)
    serial = itertools.count(1)

    def batch(target: str = account) -> identity_pb2.IngestRequest:
        n = next(serial)
        return identity_pb2.IngestRequest(
            account=target,
            seq=1,
            records=[
                identity_pb2.Record(
                    source="abuse", record_id=f"a{n}", contacts=[key("phone", f"+1555{n:07d}")]
                )
            ],
        )

    def stream_of(rpc: str, md, first: list, timeout: float):
        if rpc == "watch":
            return profile.WatchChanges(watch, metadata=md, timeout=timeout)
        if rpc == "resolve":
            return identity.StreamResolve(held(first, release), metadata=md, timeout=timeout)
        return identity.Ingest(held(first, release), metadata=md, timeout=timeout)

    def first_requests(rpc: str) -> list:
        return [] if rpc == "watch" else [resolve] if rpc == "resolve" else [batch()]

    def abandoned(rpc: str, md, kept: list) -> None:
        # Read the first answer, then leave the stream open until its deadline.
        call = stream_of(rpc, md, first_requests(rpc), DEADLINE)
        next(call)
        kept.append((time.monotonic(), call))

    def cancelled(rpc: str, md, kept: list) -> None:
        call = stream_of(rpc, md, first_requests(rpc), 5)
        next(call)
        call.cancel()

    def wrong_account(rpc: str, md, kept: list) -> None:
        if rpc == "watch":
            call = profile.WatchChanges(
                profile_pb2.WatchChangesRequest(account=other), metadata=md, timeout=5
            )
        elif rpc == "resolve":  # the first message is fine, the second names another account
            call = identity.StreamResolve(iter([resolve, foreign]), metadata=md, timeout=5)
        else:
            call = identity.Ingest(iter([batch(other)]), metadata=md, timeout=5)
        list(call)

    def no_token(rpc: str, md, kept: list) -> None:
        list(stream_of(rpc, [], first_requests(rpc), 5))

    def strangers_key(rpc: str, md, kept: list) -> None:
        list(stream_of(rpc, auth(stranger), first_requests(rpc), 5))

    kinds: list[tuple[str, Callable]] = [
        ("abandoned", abandoned),
        ("cancelled", cancelled),
        ("wrong account", wrong_account),
        ("no token", no_token),
        ("another account's key", strangers_key),
    ]
    plan = [
        (rpc, kind) for kind in kinds for rpc in ("watch", "resolve", "ingest")
    ]  # 15 shapes, every streaming RPC in each
    outcomes: Counter[tuple[str, str, str]] = Counter()
    lock = threading.Lock()

    def worker(index: int) -> None:
        md = auth(tokens[index])
        kept: list = []
        for n in range(index, STREAMS, WORKERS):
            rpc, (kind, run) = plan[n % len(plan)]
            # A few abandoned streams at a time per key, well below its quota.
            now = time.monotonic()
            while kept and now - kept[0][0] > DEADLINE + 0.2:
                kept.pop(0)
            if len(kept) >= ABANDONED_PER_WORKER:
                time.sleep(max(0.0, kept[0][0] + DEADLINE + 0.2 - now))
                kept.pop(0)
            try:
                run(rpc, md, kept)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            except StopIteration:
                code = "ENDED"
            with lock:
                outcomes[(rpc, kind, code)] += 1
        kept.clear()

    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            for done in [pool.submit(worker, i) for i in range(WORKERS)]:
                done.result(timeout=240)
    finally:
        release.set()
    elapsed = time.monotonic() - started

    assert sum(outcomes.values()) == STREAMS
    assert abused.alive(), abused.log()[-4000:]
    assert abused.health() == health_pb2.HealthCheckResponse.SERVING
    answer = identity.Resolve(resolve, metadata=auth(tokens[0]), timeout=10)
    assert answer.status == identity_pb2.RESOLVE_STATUS_FOUND
    # Each shape was refused (or ended) the way it should be, on every RPC.
    for rpc in ("watch", "resolve", "ingest"):
        assert outcomes[(rpc, "abandoned", "OK")] > 0
        assert outcomes[(rpc, "cancelled", "OK")] > 0
        assert outcomes[(rpc, "wrong account", "PERMISSION_DENIED")] > 0
        assert outcomes[(rpc, "no token", "UNAUTHENTICATED")] > 0
        assert outcomes[(rpc, "another account's key", "PERMISSION_DENIED")] > 0
    # Besides those: a deadline that passed before the first answer, or a quota
    # still full of streams the server had not yet seen end. Nothing else.
    allowed = {"OK", "PERMISSION_DENIED", "UNAUTHENTICATED", "DEADLINE_EXCEEDED"}
    allowed.add("RESOURCE_EXHAUSTED")
    unexpected = {shape: n for shape, n in outcomes.items() if shape[2] not in allowed}
    assert not unexpected, (unexpected, elapsed)

    # Every stream slot came back: one key can open its whole quota again.
    calls = []
    deadline = time.monotonic() + 10
    while True:
        try:
            for call in calls:
                call.cancel()
            calls = [profile.WatchChanges(watch, metadata=auth(tokens[1])) for _ in range(PER_KEY)]
            for call in calls:
                next(call)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "stream slots were not given back"
            time.sleep(0.2)
    for call in calls:
        call.cancel()
    channel.close()

    log = abused.log()
    for sign in ("Traceback", "Fatal Python error", "Segmentation fault", "unexpected error"):
        assert sign not in log, log[log.find(sign) - 2000 : log.find(sign) + 2000]
