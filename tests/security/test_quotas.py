"""Stream quotas: one key, or one account, cannot take every stream slot (SPEC 8, 9).

The server here has 12 stream slots, at most 6 per account and 4 per key. A
reader key of account Y that holds all it may, and a second key of Y that
fills the account's quota, leave account Z's Ingest and account X's
StreamResolve working.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from idlink.security.apikeys import create_key
from idlink.service.auth import ACCOUNT_QUOTA, KEY_QUOTA
from idlink.v1 import identity_pb2, profile_pb2
from tests.service.conftest import ServerProcess, error_details, key

from .conftest import Stubs, auth, link

SLOTS, PER_ACCOUNT, PER_KEY = 12, 6, 4


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess(
        tmp_path_factory.mktemp("quotas") / "data",
        "--max-streams",
        str(SLOTS),
        "--max-streams-per-account",
        str(PER_ACCOUNT),
        "--max-streams-per-key",
        str(PER_KEY),
    ).start()
    yield running
    assert running.stop() == 0, running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-4000:]


def names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"y-{tag}", f"z-{tag}", f"x-{tag}"


def open_feed(stubs: Stubs, token: str, account: str):
    """A change feed that stays open (it has read its first answer)."""
    call = stubs.profile.WatchChanges(
        profile_pb2.WatchChangesRequest(account=account), metadata=auth(token), timeout=60
    )
    next(call)
    return call


def test_one_key_cannot_starve_other_accounts(limited):
    y, z, x = names()
    admins = {a: create_key(limited.data, a, "admin") for a in (y, z, x)}
    greedy = create_key(limited.data, y, "reader")
    second = create_key(limited.data, y, "reader")
    z_writer = create_key(limited.data, z, "writer")
    x_reader = create_key(limited.data, x, "reader")
    stubs = Stubs(limited.target)
    held = []
    try:
        link(stubs, admins[y], y, "r1", key("email", "y@x.com"))
        link(stubs, admins[x], x, "r1", key("email", "x@x.com"))
        held += [open_feed(stubs, greedy, y) for _ in range(PER_KEY)]
        with pytest.raises(grpc.RpcError) as caught:
            open_feed(stubs, greedy, y)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per key" in caught.value.details()
        assert error_details(caught.value)["idlink-error-reason"] == KEY_QUOTA
        # Another key of Y fills the account's quota, and no more.
        held += [open_feed(stubs, second, y) for _ in range(PER_ACCOUNT - PER_KEY)]
        with pytest.raises(grpc.RpcError) as caught:
            open_feed(stubs, second, y)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per account" in caught.value.details()
        assert error_details(caught.value)["idlink-error-reason"] == ACCOUNT_QUOTA

        # Z ingests and X resolves on a stream while Y holds all it may.
        batch = identity_pb2.IngestRequest(
            account=z,
            seq=1,
            records=[
                identity_pb2.Record(
                    source="crm", record_id="z1", contacts=[key("email", "z@x.com")]
                )
            ],
        )
        acks = list(stubs.identity.Ingest(iter([batch]), metadata=auth(z_writer), timeout=30))
        assert [a.committed_seq for a in acks] == [1]
        answers = list(
            stubs.identity.StreamResolve(
                iter([identity_pb2.ResolveRequest(account=x, contact=key("email", "x@x.com"))]),
                metadata=auth(x_reader),
                timeout=30,
            )
        )
        assert [a.status for a in answers] == [identity_pb2.RESOLVE_STATUS_FOUND]
        # Z's and X's own streams are theirs to use: X opens several at once.
        x_feeds = [open_feed(stubs, x_reader, x) for _ in range(PER_KEY)]
        held += x_feeds
    finally:
        for call in held:
            call.cancel()
        stubs.close()


def test_a_stream_given_back_can_be_opened_again(limited):
    y, _, _ = names()
    admin = create_key(limited.data, y, "admin")
    reader = create_key(limited.data, y, "reader")
    stubs = Stubs(limited.target)

    def whole_quota() -> list:
        for _ in range(50):  # until the server has seen the last round's cancellations
            held: list = []
            try:
                for _ in range(PER_KEY):
                    held.append(open_feed(stubs, reader, y))
                return held
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                for call in held:
                    call.cancel()
                time.sleep(0.1)
        raise AssertionError("the cancelled streams' quota was not given back")

    try:
        link(stubs, admin, y, "r1", key("email", "again@x.com"))
        for _ in range(3):  # each round takes the whole quota and gives it back
            for call in whole_quota():
                call.cancel()
    finally:
        stubs.close()
