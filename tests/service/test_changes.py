"""The change feed through a real server: replay after a restart, live follow, clean end."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest

from idlink.v1 import common_pb2, identity_pb2, profile_pb2
from tests.helpers import link
from tests.service.conftest import key

from .conftest import Client, ServerProcess


def replay(
    client: Client, account: str, after: int, idle: float = 1.5
) -> list[common_pb2.ChangeEvent]:
    """Every event after ``after`` that the feed gives before it goes quiet for ``idle`` seconds."""
    call = client.profile.WatchChanges(
        profile_pb2.WatchChangesRequest(account=account, after_seq=after)
    )
    events: queue.Queue[common_pb2.ChangeEvent | None] = queue.Queue()

    def read() -> None:
        try:
            for response in call:
                for event in response.events:
                    events.put(event)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise
        finally:
            events.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    got = []
    try:
        while True:
            event = events.get(timeout=idle)
            if event is None:
                break
            got.append(event)
    except queue.Empty:
        pass
    call.cancel()
    reader.join(timeout=10)
    assert not reader.is_alive()
    return got


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own, which the test may restart."""
    running = ServerProcess(tmp_path / "data").start()
    yield running
    running.stop()
    assert "Traceback" not in running.log(), running.log()[-4000:]


def test_change_feed_replays_after_a_restart_without_gaps_or_duplicates(own_server, account):
    client = Client(own_server.target)
    try:
        for i in range(10):
            link(
                client,
                account,
                f"r{i}",
                key("phone", f"+1555600{i:04d}"),
                key("email", f"f{i // 3}@x.com"),
                seconds=i,
            )
        link(
            client, account, "join", key("email", "f0@x.com"), key("email", "f3@x.com"), seconds=20
        )
        client.identity.DeleteRecord(
            identity_pb2.DeleteRecordRequest(account=account, source="crm", record_id="r4")
        )
        client.identity.SetContactPolicy(
            identity_pb2.SetContactPolicyRequest(
                account=account, contact=key("email", "f0@x.com"), do_not_link=True
            )
        )
        before = replay(client, account, 0)
    finally:
        client.close()
    assert before, "the operations must have produced events"

    assert own_server.stop() == 0
    own_server.start()
    client = Client(own_server.target)
    try:
        everything = replay(client, account, 0)
        seqs = [e.seq for e in everything]
        assert seqs == list(range(1, len(seqs) + 1)), "no gaps, no duplicates, in order"
        assert everything == before
        kinds = {e.kind for e in everything}
        assert {common_pb2.CHANGE_KIND_CREATED, common_pb2.CHANGE_KIND_MERGED} <= kinds
        assert common_pb2.CHANGE_KIND_POLICY_CHANGED in kinds

        middle = seqs[len(seqs) // 2]
        tail = replay(client, account, middle)
        assert [e.seq for e in tail] == list(range(middle + 1, seqs[-1] + 1))
        assert tail == everything[middle:]
    finally:
        client.close()


def test_watch_follows_live_changes_and_ends_cleanly_at_shutdown(own_server, account):
    client = Client(own_server.target)
    call = client.profile.WatchChanges(profile_pb2.WatchChangesRequest(account=account))
    seen: queue.Queue[object] = queue.Queue()

    def read() -> None:
        try:
            for response in call:
                for event in response.events:
                    seen.put(event)
            seen.put("ended")
        except grpc.RpcError as exc:
            seen.put(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(0.3)
        link(client, account, "live", key("phone", "+15556100001"), key("email", "live@x.com"))
        first = seen.get(timeout=10)
        assert isinstance(first, common_pb2.ChangeEvent)
        assert first.seq == 1 and first.kind == common_pb2.CHANGE_KIND_CREATED

        started = time.monotonic()
        assert own_server.stop() == 0
        while True:
            item = seen.get(timeout=15)
            if not isinstance(item, common_pb2.ChangeEvent):
                break
        assert item == "ended", f"the stream must end with OK at shutdown, not {item!r}"
        assert time.monotonic() - started < 10
    finally:
        call.cancel()
        reader.join(timeout=10)
        client.close()


def test_watch_changes_of_a_cancelled_client_is_released(client, account):
    # A client that goes away must not keep anything running: the next calls work.
    for _ in range(5):
        call = client.profile.WatchChanges(profile_pb2.WatchChangesRequest(account=account))
        call.cancel()
    link(client, account, "after", key("phone", "+15556200001"))
    assert [e.seq for e in replay(client, account, 0, idle=1.0)] == [1]
