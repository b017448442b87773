"""The per-process serving cache: read answers kept with the proof that they still hold.

A cached answer (a resolve, an admission) is kept with the log of every LMDB
operation its computation made and the result of each, as stored bytes
(:mod:`idlink.store.serving`), and with the id of the snapshot it was
computed in. A call opens one read transaction and then:

- same snapshot id as the entry: nothing was committed since (by any
  process), the answer is the one the computation would give now;
- same data version as the entry (and its log read no audit data): only
  bookkeeping was committed since (audit flushes, health probes), which the
  computation did not read, so again the answer is the one it would give now;
- otherwise the log is replayed in this transaction: if every operation gives
  the same result, the computation (a deterministic function of those
  results, the engine's master secret and the call's arguments) would take
  the same path and give the same answer, so the entry is served and stamped
  with this snapshot;
- otherwise the answer is computed again in this transaction, recorded, and
  kept.

So an answer is never stale: it is always the answer of the call's own read
transaction. docs/serving.md says why, and what the cache keys hold. The
cached values are shared by every caller: they are never changed after they
are made (a converter reads them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from idlink.store.env import Store
from idlink.store.serving import ReadLog, data_version, recorded, snapshot_id
from idlink.store.txn import Txn

__all__ = ["DEFAULT_ENTRIES", "ServingCache"]

T = TypeVar("T")

# Entries kept per process; beyond it the oldest quarter goes.
DEFAULT_ENTRIES = 65_536


class ServingCache:
    """Answers of reads, each with its snapshot id and the log that proves it still holds."""

    def __init__(self, store: Store, *, entries: int = DEFAULT_ENTRIES) -> None:
        self.store = store
        self.limit = entries
        # key -> (snapshot id, data version or None, log, answer); replaced whole, never
        # changed in place. The version is None when the log read bookkeeping data.
        self._entries: dict[Hashable, tuple[int, int | None, ReadLog, Any]] = {}
        # The snapshot id and data version of the last snapshot whose version was read.
        self._version_at: tuple[int, int] = (-1, 0)
        self.hits = 0  # served at the same snapshot or data version
        self.replayed = 0  # served after a replay showed nothing it read had changed
        self.computed = 0

    def answer(self, key: Hashable, make: Callable[[], Callable[[Txn], T]]) -> T:
        """The answer of ``make()`` in a new read transaction, from the cache when it holds.

        ``make`` gives the computation (called only when the cache cannot answer).
        """
        with self.store.read() as txn:
            # The hits first, inline: they are most calls.
            entry = self._entries.get(key)
            if (
                entry is not None
                and self.limit > 0
                and (
                    entry[0] == (snapshot := snapshot_id(txn))
                    or (entry[1] is not None and entry[1] == self._data_version(txn, snapshot))
                )
            ):
                self.hits += 1
                return entry[3]  # type: ignore[no-any-return]
            return self.answer_in(txn, key, make)

    def _data_version(self, txn: Txn, snapshot: int) -> int:
        """``data_version(txn)`` of the snapshot ``snapshot_id(txn)``, read once per snapshot.

        A served store commits bookkeeping every few milliseconds (audit
        flushes), so most hits are proved by the data version: one LMDB get
        per snapshot instead of one per hit.
        """
        known = self._version_at
        if known[0] == snapshot:
            return known[1]
        version = data_version(txn)
        self._version_at = (snapshot, version)
        return version

    def answer_in(self, txn: Txn, key: Hashable, make: Callable[[], Callable[[Txn], T]]) -> T:
        """The answer of ``make()(txn)``, from the cache when it provably equals it."""
        if self.limit <= 0:
            return make()(txn)
        snapshot = snapshot_id(txn)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] == snapshot:
                self.hits += 1
                return entry[3]  # type: ignore[no-any-return]
            version = self._data_version(txn, snapshot)
            if entry[1] is not None and entry[1] == version:
                self.hits += 1
                return entry[3]  # type: ignore[no-any-return]
            if entry[2].unchanged(txn):
                self.replayed += 1
                kept_version = None if entry[1] is None else version
                self._entries[key] = (snapshot, kept_version, entry[2], entry[3])
                return entry[3]  # type: ignore[no-any-return]
        compute = make()
        with recorded(txn) as log:
            value = compute(txn)
        self.computed += 1
        if log.replayable:
            version_or_none = None if log.reads_bookkeeping() else self._data_version(txn, snapshot)
            self._keep(key, (snapshot, version_or_none, log, value))
        return value

    def _keep(self, key: Hashable, entry: tuple[int, int | None, ReadLog, Any]) -> None:
        entries = self._entries
        if key not in entries and len(entries) >= self.limit:
            for old in list(itertools.islice(entries, max(1, self.limit // 4))):
                entries.pop(old, None)
        entries[key] = entry

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
