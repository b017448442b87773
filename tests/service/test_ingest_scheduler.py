"""The ingest scheduler: batches grouped into one write, one by one after a failed group.

Run on the event loop against a stand-in engine whose writes complete on a
writer thread of its own: the scheduler awaits the writer's future itself,
so no pool thread is ever involved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

import pytest

from idlink.domain.engine import RecordInput
from idlink.domain.linking import APPLIED
from idlink.errors import InvalidArgument
from idlink.service.ingest import Batch, IngestScheduler
from idlink.service.metrics import Metrics


class Result:
    def __init__(self, outcome: int) -> None:
        self.outcome = outcome


class WriterEngine:
    """Commits on its own writer thread; a record id starting with "bad" fails its write."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def submit_ingest(self, account, records, actor):
        future: concurrent.futures.Future = concurrent.futures.Future()

        def write() -> None:
            self.release.wait(5)
            self.threads.add(threading.current_thread().name)
            ids = [r.record_id for r in records]
            self.writes.append(ids)
            if any(i.startswith("bad") for i in ids):
                future.set_exception(InvalidArgument("bad record", field="records[0]"))
            else:
                future.set_result([Result(APPLIED) for _ in records])

        threading.Thread(target=write, name="writer").start()
        return future


def batch(seq: int, *ids: str) -> Batch:
    return Batch("acct", seq, [RecordInput("crm", i, [], 0) for i in ids])


async def collect(engine, batches, *, hold_first: bool = False):
    acks, error = [], None

    async def source():
        for item in batches:
            yield item
            if hold_first:
                await asyncio.sleep(0.05)  # the first write is still waiting

    if hold_first:
        engine.release.clear()
        asyncio.get_running_loop().call_later(0.3, engine.release.set)
    try:
        async for ack in IngestScheduler(engine, "key:k (writer)", Metrics()).acks(source()):
            acks.append((ack.committed_seq, ack.records))
    except InvalidArgument as exc:
        error = exc
    return acks, error


def test_batches_queued_during_a_write_are_committed_together_on_the_writer_thread():
    engine = WriterEngine()
    acks, error = asyncio.run(
        collect(engine, [batch(1, "a"), batch(2, "b"), batch(3, "c")], hold_first=True)
    )
    assert error is None
    assert engine.writes[0] == ["a"] and sorted(sum(engine.writes, [])) == ["a", "b", "c"]
    assert len(engine.writes) < 3  # b and c waited for a, then went in one write
    assert acks[-1][0] == 3 and sum(n for _, n in acks) == 3
    assert engine.threads == {"writer"}


def test_a_failed_group_is_committed_again_batch_by_batch_up_to_the_bad_one():
    engine = WriterEngine()
    acks, error = asyncio.run(
        collect(
            engine,
            [batch(1, "a"), batch(2, "b"), batch(3, "bad"), batch(4, "d")],
            hold_first=True,
        )
    )
    assert error is not None and error.message.startswith("batch seq 3: ")
    assert [seq for seq, _ in acks] == sorted(seq for seq, _ in acks)
    assert {1, 2} <= {seq for seq, _ in acks} and 3 not in {seq for seq, _ in acks}
    assert 4 not in {seq for seq, _ in acks}


def test_an_error_reading_the_stream_ends_it_after_the_batches_before():
    engine = WriterEngine()

    async def run():
        async def source():
            yield batch(1, "a")
            raise InvalidArgument("seq must increase", field="seq")

        got = []
        with pytest.raises(InvalidArgument):
            async for ack in IngestScheduler(engine, "", Metrics()).acks(source()):
                got.append(ack.committed_seq)
        return got

    assert asyncio.run(run()) == [1]


def test_a_write_whose_waiter_gave_up_still_commits_and_the_writer_goes_on(tmp_path, caplog):
    from idlink.domain.engine import IdentityEngine
    from idlink.security.crypto import open_store

    store = open_store(tmp_path / "data")
    engine = IdentityEngine(store, b"s" * 32)
    started, release = threading.Event(), threading.Event()

    def slow(unit) -> str:
        started.set()
        release.wait(5)
        return "done"

    async def run() -> None:
        waiter = asyncio.ensure_future(asyncio.wrap_future(engine.submit("acct", "", slow)))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        waiter.cancel()  # the call went away while its write ran
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()

    try:
        with caplog.at_level(logging.ERROR):
            asyncio.run(run())
            assert engine.write("acct", "", lambda unit: 7) == 7
    finally:
        store.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
