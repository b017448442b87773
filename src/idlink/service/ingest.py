"""The write side of an ingest stream (SPEC 5): queue, group, commit, acknowledge.

The servicer turns each ``IngestRequest`` into a :class:`Batch` (validated,
converted); this module schedules the batches of one stream beside the
store's writer:

- at most ``QUEUE_BATCHES`` batches wait per stream; beyond that the stream
  is not read, so gRPC flow control pushes back on a fast client;
- batches that queued up while the last write ran are committed together, in
  one write of at most ``GROUP_RECORDS`` records of one account;
- when a grouped write fails, the group is committed again one batch at a
  time, so the batches before the bad one are committed and acknowledged and
  the stream ends with the bad batch's error (nothing of it is written);
- a write is awaited on the event loop as the writer's own future
  (``engine.submit_ingest``): no pool thread waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.linking import APPLIED
from idlink.errors import IdlinkError
from idlink.service.metrics import Metrics
from idlink.v1 import identity_pb2

QUEUE_BATCHES = 4
GROUP_RECORDS = 20_000


@dataclass(slots=True)
class Batch:
    """One validated batch of a stream: its account, sequence number and records."""

    account: str
    seq: int
    records: list[RecordInput]


class _End:
    """Marks the end of an ingest stream in the batch queue."""


def located(exc: IdlinkError, where: str) -> IdlinkError:
    """The same error with a note saying which message of a stream it is about."""
    return type(exc)(f"{where}: {exc.message}", reason=exc.reason, field=exc.field)


class IngestScheduler:
    """Commits the batches of one ingest stream for ``actor`` and acknowledges each."""

    def __init__(self, engine: IdentityEngine, actor: str, metrics: Metrics) -> None:
        self.engine = engine
        self.actor = actor
        self.metrics = metrics

    async def acks(self, batches: AsyncIterator[Batch]) -> AsyncIterator[identity_pb2.IngestAck]:
        """One acknowledgement per batch, in order, once it is durably committed.

        An error raised while reading ``batches`` ends the stream after the
        batches read before it are committed and acknowledged.
        """
        queue: asyncio.Queue[Batch | IdlinkError | _End] = asyncio.Queue(maxsize=QUEUE_BATCHES)

        async def read() -> None:
            try:
                async for batch in batches:
                    await queue.put(batch)
            except IdlinkError as exc:
                await queue.put(exc)
            finally:
                await queue.put(_End())

        reader = asyncio.create_task(read())
        held: Batch | IdlinkError | _End | None = None
        try:
            while True:
                item = held if held is not None else await queue.get()
                held = None
                if isinstance(item, _End):
                    break
                if isinstance(item, IdlinkError):
                    raise item
                group = [item]
                size = len(item.records)
                # Batches that queued up while the last write ran go in one write.
                while not queue.empty() and size < GROUP_RECORDS:
                    following = queue.get_nowait()
                    if (
                        not isinstance(following, Batch)
                        or following.account != item.account
                        or size + len(following.records) > GROUP_RECORDS
                    ):
                        held = following
                        break
                    group.append(following)
                    size += len(following.records)
                async for ack in self._commit(group):
                    yield ack
            await reader
        finally:
            reader.cancel()

    async def _commit(self, group: list[Batch]) -> AsyncIterator[identity_pb2.IngestAck]:
        """Commit batches in one write; on an error, one by one to find the bad batch."""
        try:
            ack = await self._commit_together(group)
        except IdlinkError as exc:
            if len(group) == 1:
                raise located(exc, f"batch seq {group[0].seq}") from None
        else:
            yield ack
            return
        for batch in group:
            try:
                ack = await self._commit_together([batch])
            except IdlinkError as exc:
                raise located(exc, f"batch seq {batch.seq}") from None
            yield ack

    async def _commit_together(self, group: Sequence[Batch]) -> identity_pb2.IngestAck:
        records = [r for batch in group for r in batch.records]
        ack = identity_pb2.IngestAck(committed_seq=group[-1].seq, records=len(records))
        if not records:
            return ack
        # Done once the write transaction committed (durably) and readers were told.
        results = await asyncio.wrap_future(
            self.engine.submit_ingest(group[0].account, records, self.actor)
        )
        self.metrics.ingested.inc(len(records))
        index = 0
        for batch in group:
            for record in batch.records:
                result = results[index]
                index += 1
                if result.outcome != APPLIED:
                    ack.refused.add(
                        seq=batch.seq,
                        source=record.source,
                        record_id=record.record_id,
                        outcome=result.outcome,
                    )
        return ack
