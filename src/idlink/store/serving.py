"""Reads that can be proved unchanged: the store side of the serving cache (docs/serving.md).

A read answer (a resolve, an admission) is a deterministic function of the
results of the LMDB operations it made. :func:`recorded` writes every LMDB
operation of a read transaction (``get``, a cursor's positioning and each
item it yields) to a :class:`ReadLog` with its result, as the raw bytes the
store holds (sealed values stay sealed: nothing clear is kept).
:meth:`ReadLog.unchanged` replays the same operations, in the same order, on
another transaction and says whether every result is the same. If it is, the
computation run again on that snapshot would make exactly the same calls and
get exactly the same results, so it would give the same answer: that is what
makes a cached answer exact.

:func:`snapshot_id` is the id of the last committed write transaction (LMDB's
``txnid``), which every commit of any process bumps: a log taken at the same
id needs no replay at all.

:func:`data_version` is a number in the store's meta that every write
transaction bumps (:meth:`~idlink.store.env.Store.write`) except the
bookkeeping ones, which may write only the audit log, its sequence numbers,
the health probe and the format stamp of a new store (:func:`bookkeeping_raw`
refuses anything else). A log that read none of those holds at every
snapshot with the same data version, with no replay: so the audit flushes
of a busy server do not cost its cached answers.

Only this module looks inside :class:`~idlink.store.txn.Txn` (its raw LMDB
transaction), so the domain's cache never sees LMDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from idlink.store import codec
from idlink.store.txn import _AUDIT_SEQ, _COUNTER, Txn

__all__ = [
    "BookkeepingOnly",
    "ReadLog",
    "Unreplayable",
    "bookkeeping_raw",
    "bump_data_version",
    "data_version",
    "recorded",
    "snapshot_id",
]

DATA_VERSION_KEY = b"data-version"
# What a bookkeeping write may write in meta: the audit log's sequence numbers, the probe.
_BOOKKEEPING_META_PREFIX = _COUNTER + _AUDIT_SEQ
PROBE_KEY = b"health-probe"  # the health probe's write (Store.probe)
# The format stamp, written once when a store is made (and checked by every open).
_BOOKKEEPING_META_KEYS = frozenset({PROBE_KEY, b"format"})

# Operations of a log (the first item of each entry).
_CURSOR = 1
_SET_RANGE = 2
_SET_KEY = 3
_ITER = 4
_PULL = 5

_STOP = object()  # an iterator that ended

# A log longer than this is not kept (a resolve makes a few dozen operations).
MAX_LOG_ENTRIES = 4096


class Unreplayable(Exception):
    """The computation used an LMDB operation the log does not record: do not cache it."""


class ReadLog:
    """The LMDB operations of one computation, with their results.

    Gets are kept apart from cursor operations: a get's result depends only on
    its database, its key and the snapshot, so gets can be checked in any
    order; a cursor operation's result also depends on that cursor's earlier
    operations, so cursor operations are checked in the order they were made.
    """

    __slots__ = ("gets", "entries", "broken", "db_names", "_size", "_got_bookkeeping")

    def __init__(self, db_names: dict[int, str]) -> None:
        self.gets: list[tuple[str, bytes, bytes | None]] = []
        self.entries: list[tuple[Any, ...]] = []  # cursor operations, in order
        self.broken = False  # an operation was not recorded, or the log grew too long
        self.db_names = db_names
        self._size = 0
        self._got_bookkeeping = False  # a get read the audit log or bookkeeping meta

    def add_get(self, name: str, key: bytes, value: bytes | None) -> None:
        self._size += 1
        if self._size > MAX_LOG_ENTRIES:
            self.broken = True
            return
        self.gets.append((name, key, value))
        if name == "audit" or (name == "meta" and _is_bookkeeping_meta(key)):
            self._got_bookkeeping = True

    def add(self, entry: tuple[Any, ...]) -> None:
        self._size += 1
        if self._size > MAX_LOG_ENTRIES:
            self.broken = True
            return
        self.entries.append(entry)

    def __len__(self) -> int:
        return self._size

    @property
    def replayable(self) -> bool:
        return not self.broken

    def reads_bookkeeping(self) -> bool:
        """Whether a bookkeeping write could change a result (the data version proves nothing)."""
        if self._got_bookkeeping:
            return True
        entries = self.entries
        return bool(entries) and any(
            entry[0] == _CURSOR and entry[2] in ("audit", "meta") for entry in entries
        )

    def unchanged(self, txn: Txn) -> bool:
        """Whether every recorded operation gives the same result in ``txn``'s snapshot."""
        if self.broken:
            return False
        raw = txn._raw
        if isinstance(raw, _RecordingRaw):
            raw = raw._raw
        dbs = txn._dbs
        get = raw.get
        for name, key, value in self.gets:
            if get(key, db=dbs[name]) != value:
                return False
        if not self.entries:
            return True
        cursors: dict[int, Any] = {}
        iterators: dict[int, Iterator[Any]] = {}
        for entry in self.entries:
            op = entry[0]
            if op == _CURSOR:
                cursors[entry[1]] = raw.cursor(db=dbs[entry[2]])
            elif op == _SET_RANGE:
                if cursors[entry[1]].set_range(entry[2]) != entry[3]:
                    return False
            elif op == _SET_KEY:
                if cursors[entry[1]].set_key(entry[2]) != entry[3]:
                    return False
            elif op == _ITER:
                _, cid, iid, dup, keys, values = entry
                cursor = cursors[cid]
                made = (
                    cursor.iternext_dup(keys=keys, values=values)
                    if dup
                    else cursor.iternext(keys=keys, values=values)
                )
                iterators[iid] = iter(made)
            else:  # _PULL
                _, iid, item = entry
                got = next(iterators[iid], _STOP)
                if got is not _STOP:
                    got = _plain(got)
                if got != item and not (got is _STOP and item is _STOP):
                    return False
        return True


def _plain(item: Any) -> Any:
    if isinstance(item, tuple):
        return tuple(bytes(part) for part in item)
    return bytes(item)


class _RecordingCursor:
    """An LMDB cursor that writes what it does to a log (the operations the store uses)."""

    __slots__ = ("_cursor", "_log", "_id")

    def __init__(self, cursor: Any, log: ReadLog, cursor_id: int) -> None:
        self._cursor = cursor
        self._log = log
        self._id = cursor_id

    def set_range(self, key: bytes) -> bool:
        found = bool(self._cursor.set_range(key))
        self._log.add((_SET_RANGE, self._id, bytes(key), found))
        return found

    def set_key(self, key: bytes) -> bool:
        found = bool(self._cursor.set_key(key))
        self._log.add((_SET_KEY, self._id, bytes(key), found))
        return found

    def _iterate(self, made: Any, dup: bool, keys: bool, values: bool) -> Iterator[Any]:
        log = self._log
        iterator_id = len(log)
        log.add((_ITER, self._id, iterator_id, dup, keys, values))
        for item in made:
            plain = _plain(item)
            log.add((_PULL, iterator_id, plain))
            yield plain
        log.add((_PULL, iterator_id, _STOP))

    def iternext(self, keys: bool = True, values: bool = True) -> Iterator[Any]:
        return self._iterate(self._cursor.iternext(keys=keys, values=values), False, keys, values)

    def iternext_dup(self, keys: bool = False, values: bool = True) -> Iterator[Any]:
        made = self._cursor.iternext_dup(keys=keys, values=values)
        return self._iterate(made, True, keys, values)

    def __iter__(self) -> Iterator[Any]:
        return self.iternext()

    def __getattr__(self, name: str) -> Any:
        # Any other cursor operation is not recorded: the answer is not cached.
        self._log.broken = True
        return getattr(self._cursor, name)


class _RecordingRaw:
    """A read-only LMDB transaction that writes each operation and its result to a log."""

    __slots__ = ("_raw", "_log", "_names", "_cursors")

    def __init__(self, raw: Any, log: ReadLog) -> None:
        self._raw = raw
        self._log = log
        self._names = log.db_names
        self._cursors = 0

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        found = self._raw.get(key, db=db)
        # bytes() only where needed: the call costs about a third of a raw get.
        if found is not None and type(found) is not bytes:
            found = bytes(found)
        self._log.add_get(self._names[id(db)], key if type(key) is bytes else bytes(key), found)
        return default if found is None else found

    def cursor(self, db: Any = None) -> _RecordingCursor:
        cursor_id = self._cursors
        self._cursors += 1
        self._log.add((_CURSOR, cursor_id, self._names[id(db)]))
        return _RecordingCursor(self._raw.cursor(db=db), self._log, cursor_id)

    def id(self) -> int:
        return int(self._raw.id())

    def __getattr__(self, name: str) -> Any:
        self._log.broken = True
        return getattr(self._raw, name)


class _Recording:
    """The context manager :func:`recorded` gives (a class: a generator costs more per read)."""

    __slots__ = ("_txn", "_raw", "_kept", "_log")

    def __init__(self, txn: Txn) -> None:
        raw = txn._raw
        if isinstance(raw, _RecordingRaw):  # already recorded by an outer block
            raise Unreplayable("a read is being recorded already")
        self._txn = txn
        self._raw = raw
        self._log = ReadLog(txn._dbs.names)

    def __enter__(self) -> ReadLog:
        txn = self._txn
        # The transaction's own caches (records opened earlier in it) would answer
        # without an LMDB operation, which the log would then miss: the block
        # starts with empty ones, and the transaction gets its own back after.
        self._kept = txn.take_caches()
        txn._raw = _RecordingRaw(self._raw, self._log)  # type: ignore[assignment]
        return self._log

    def __exit__(self, *exc: object) -> None:
        txn = self._txn
        txn._raw = self._raw
        txn.restore_caches(self._kept)


def recorded(txn: Txn) -> _Recording:
    """Log every LMDB operation made through ``txn`` while the block runs (a context manager)."""
    return _Recording(txn)


def snapshot_id(txn: Txn) -> int:
    """The id of the last write committed before ``txn`` began (any process's)."""
    raw = txn._raw
    if isinstance(raw, _RecordingRaw):
        return raw.id()
    return int(raw.id())


def data_version(txn: Txn) -> int:
    """The data version of ``txn``'s snapshot: equal versions mean equal data but bookkeeping."""
    raw = txn._raw
    if isinstance(raw, _RecordingRaw):
        raw = raw._raw
    found = raw.get(DATA_VERSION_KEY, db=txn._dbs["meta"])
    return 0 if found is None else codec.read_u64(bytes(found))


def bump_data_version(raw: Any, dbs: dict[str, Any]) -> None:
    """Bump the data version inside the raw write transaction ``raw`` (before its commit)."""
    meta = dbs["meta"]
    found = raw.get(DATA_VERSION_KEY, db=meta)
    current = 0 if found is None else codec.read_u64(bytes(found))
    raw.put(DATA_VERSION_KEY, codec.u64(current + 1), db=meta)


class BookkeepingOnly(RuntimeError):
    """A bookkeeping write transaction tried to write data a read answer may depend on."""


def _is_bookkeeping_meta(key: bytes) -> bool:
    return key.startswith(_BOOKKEEPING_META_PREFIX) or key in _BOOKKEEPING_META_KEYS


class _BookkeepingRaw:
    """A write transaction that may write only the audit log and bookkeeping meta keys."""

    __slots__ = ("_raw", "_audit", "_meta")

    def __init__(self, raw: Any, dbs: dict[str, Any]) -> None:
        self._raw = raw
        self._audit = dbs["audit"]
        self._meta = dbs["meta"]

    def _check(self, key: bytes, db: Any) -> None:
        if db is self._audit or (db is self._meta and _is_bookkeeping_meta(bytes(key))):
            return
        raise BookkeepingOnly(f"a bookkeeping write may not write {bytes(key)[:32]!r}")

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        return self._raw.get(key, default, db=db)

    def put(self, key: bytes, value: bytes, *args: Any, db: Any = None, **kwargs: Any) -> Any:
        self._check(key, db)
        return self._raw.put(key, value, *args, db=db, **kwargs)

    def delete(self, key: bytes, value: bytes = b"", db: Any = None) -> Any:
        self._check(key, db)
        return self._raw.delete(key, value, db=db)

    def cursor(self, db: Any = None) -> Any:
        if db is self._audit:
            return self._raw.cursor(db=db)
        return _CheckedCursor(self._raw.cursor(db=db), db, self)

    def id(self) -> int:
        return int(self._raw.id())

    def __getattr__(self, name: str) -> Any:
        if name in ("replace", "pop", "drop"):
            raise BookkeepingOnly(f"a bookkeeping write may not {name}")
        return getattr(self._raw, name)


class _CheckedCursor:
    """A cursor of a bookkeeping write outside the audit log: it writes bookkeeping keys only."""

    __slots__ = ("_cursor", "_db", "_owner")

    def __init__(self, cursor: Any, db: Any, owner: _BookkeepingRaw) -> None:
        self._cursor = cursor
        self._db = db
        self._owner = owner

    def put(self, key: bytes, value: bytes, *args: Any, **kwargs: Any) -> Any:
        self._owner._check(key, self._db)
        return self._cursor.put(key, value, *args, **kwargs)

    def putmulti(self, items: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(items)
        for key, _ in items:
            self._owner._check(key, self._db)
        return self._cursor.putmulti(items, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("delete", "replace", "pop"):
            raise BookkeepingOnly(f"a bookkeeping write may not {name} here")
        return getattr(self._cursor, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


def bookkeeping_raw(raw: Any, dbs: dict[str, Any]) -> Any:
    """``raw`` restricted to bookkeeping writes (a write that leaves the data version as is)."""
    return _BookkeepingRaw(raw, dbs)
