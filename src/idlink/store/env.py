"""The LMDB environment: opening, the single writer thread, read transactions.

Operating rules (py-lmdb docs): one environment per process and path, opened
after any fork; one thread owns every write transaction; dead readers are
cleared with ``reader_check``; a failed commit stops the writer, because the
environment can no longer be trusted.

The map: a full map rolls back the operation, then a single-process store
grows the map and retries; with several processes growing is unsafe (py-lmdb
issue 269), so a multi-process store starts with a large sparse map and a
full map is a clear error there. Any process may still find that another one
(a server growing its map, ``idlink keys create`` with a larger map) wrote
past the end of its own map: LMDB then refuses every new transaction with
``MDB_MAP_RESIZED`` until the process adopts the new size with
``set_mapsize(0)``, which is allowed only while the process has no
transaction open. The :class:`_ReaderGate` counts every open transaction
(reads and the writer's) so the adoption waits for them, and the transaction
is then begun again.

Files: the data folder is 0700 and every file in it 0600 (SPEC 8); a looser
mode found at open is tightened, with a warning. ``server.lock`` names the
server that holds the folder (:class:`ServerLock`); ``compact_in_place``
rewrites ``data.mdb`` without its free pages (docs/operations.md).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import logging
import os
import queue
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import lmdb

from idlink.errors import (
    FailedPrecondition,
    IdlinkError,
    StoreError,
    StoreFormatError,
    StoreFull,
)
from idlink.store.serving import PROBE_KEY, bookkeeping_raw, bump_data_version
from idlink.store.txn import SUBDATABASES, Txn, open_handles

log = logging.getLogger(__name__)

T = TypeVar("T")

# 2: contacts, customers and records sealed whole; records keyed by a keyed hash
# of (source, record id) (docs/security.md). Stores of format 1 are refused.
FORMAT_VERSION = b"2"
DEFAULT_MAP_SIZE = 1 << 30
MULTI_PROCESS_MAP_SIZE = 64 << 30
READER_CHECK_SECONDS = 30.0
# How often in a row a transaction may meet MDB_MAP_RESIZED before it fails.
MAP_RESIZED_RETRIES = 8

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
SERVER_LOCK_FILE = "server.lock"
FOLDER_MODE = 0o700
FILE_MODE = 0o600

_open_paths: dict[str, int] = {}
_open_paths_lock = threading.Lock()


class StoreInUse(FailedPrecondition):
    """The data folder is held by another server or process."""

    reason = "STORE_IN_USE"


class _ReaderGate:
    """Counts this process's open transactions; lets one thread wait until there are none.

    LMDB allows ``set_mapsize`` only while the process has no transaction open
    (read or write). A thread that already holds a transaction may open
    another without waiting, or a waiting ``exclusive`` would deadlock it.
    """

    def __init__(self) -> None:
        # Every wait below happens while the gate is closed, so a reader leaving an
        # open gate has nobody to wake: the hot path is the plain lock alone (a
        # Condition's own enter, exit and notify are Python code, about 2 us a read).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._closed = False
        self._local = threading.local()

    @contextmanager
    def reading(self) -> Iterator[None]:
        depth = self.enter()
        try:
            yield
        finally:
            self.leave(depth)

    def enter(self) -> int:
        """Count one more open transaction of this thread; its depth before, for :meth:`leave`.

        ``reading`` as two calls, for :class:`_Read`, whose ``__enter__`` and
        ``__exit__`` cost less than a generator-based context manager on every read.
        """
        depth = getattr(self._local, "depth", 0)
        with self._lock:
            while self._closed and not depth:
                self._cond.wait()
            self._readers += 1
        self._local.depth = depth + 1
        return depth

    def leave(self, depth: int) -> None:
        self._local.depth = depth
        with self._lock:
            self._readers -= 1
            if self._closed:  # an exclusive() waits for the last reader
                self._cond.notify_all()

    def held(self) -> bool:
        """True while this thread has a transaction open."""
        return bool(getattr(self._local, "depth", 0))

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self.held():
            # Waiting for this thread's own transaction to end would never return.
            raise StoreError("the store map changed under an open transaction; retry")
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._closed = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()


# -- the data folder: modes and the server lock -----------------------------------------------


def secure_folder(path: str) -> None:
    """Create ``path`` 0700, or tighten it and its files to 0700 / 0600 with a warning."""
    os.makedirs(path, mode=FOLDER_MODE, exist_ok=True)
    _tighten(path, FOLDER_MODE)
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                _tighten(entry.path, FILE_MODE)


def _tighten(path: str, mode: int) -> None:
    try:
        current = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    if not current & 0o077:
        return
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        log.warning(
            "%s is readable by others (mode %o) and cannot be changed: %s", path, current, exc
        )
        return
    log.warning("%s was mode %o; now %o (others had access)", path, current, current & mode)


class ServerLock:
    """An exclusive lock on a data folder (``server.lock``) that names its holder.

    One server (with all its ``--workers``) serves a folder: a second, unrelated
    one would keep its own caches and sweeps beside the first, which is never
    what an operator meant. ``idlink compact`` holds the same lock. Commands
    that share a folder with its server (keys, backup, check, rotate-key) do
    not take it. The lock is an ``flock``: it ends with the process that holds it.
    """

    def __init__(self, path: str | os.PathLike[str], holder: str) -> None:
        self.folder = os.path.realpath(os.fspath(path))
        os.makedirs(self.folder, mode=FOLDER_MODE, exist_ok=True)
        self.path = os.path.join(self.folder, SERVER_LOCK_FILE)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise StoreError(f"cannot lock {self.path}: {exc}") from None
            holder_text = _read_holder(fd)
            os.close(fd)
            raise StoreInUse(
                f"the data folder {self.folder} is in use by {holder_text}; one server "
                "(with --workers N for several processes) serves a folder: stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({holder})\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> ServerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    # The holder writes its name just after it takes the lock: wait a moment for it.
    for _ in range(20):
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "another idlink server"


def server_lock(path: str | os.PathLike[str], holder: str) -> ServerLock:
    """Hold the folder's server lock, or raise StoreInUse naming the process that holds it."""
    return ServerLock(path, holder)


def _open_environment(path: str, map_size: int, *, sync: bool, metasync: bool) -> Any:
    return lmdb.open(
        path,
        map_size=map_size,
        max_dbs=len(SUBDATABASES) + 1,
        max_readers=512,
        sync=sync,
        metasync=metasync,
        subdir=True,
        lock=True,
        mode=FILE_MODE,
    )


class _Read:
    """:meth:`Store.read`: a read transaction, counted by the gate while open."""

    __slots__ = ("_store", "_raw", "_depth")

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> Txn:
        store = self._store
        gate = store._gate
        for _ in range(MAP_RESIZED_RETRIES):
            depth = gate.enter()
            try:
                raw = store._env.begin(write=False)
            except lmdb.MapResizedError:
                gate.leave(depth)
                store._adopt_map_size()  # outside this transaction's slot
                continue
            except lmdb.Error as exc:
                gate.leave(depth)
                raise StoreError(f"store read failed: {exc}") from None
            except BaseException:
                gate.leave(depth)
                raise
            self._raw, self._depth = raw, depth
            return Txn(raw, store._dbs, writable=False, cipher=store.cipher)
        raise StoreError("store read failed: the map keeps growing under this process")

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self._raw.abort()
        finally:
            self._store._gate.leave(self._depth)
        if isinstance(exc, lmdb.Error):
            raise StoreError(f"store read failed: {exc}") from None


class Store:
    """An LMDB store in one folder, with one writer thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None = None,
        multi_process: bool = False,
        durable: bool = True,
        cipher: Any,
    ) -> None:
        """Open (or create) the store in folder ``path``.

        Values are sealed with ``cipher`` (SPEC 8): the store does not choose
        its sealer; ``idlink.security.crypto.open_store`` opens a folder with
        its own data keys.
        """
        self.path = os.path.realpath(os.fspath(path))
        self.multi_process = multi_process
        secure_folder(self.path)
        with _open_paths_lock:
            if _open_paths.get(self.path) == os.getpid():
                raise StoreError(f"store {self.path} is already open in this process")
            _open_paths[self.path] = os.getpid()
        if map_size is None:
            map_size = MULTI_PROCESS_MAP_SIZE if multi_process else DEFAULT_MAP_SIZE
        try:
            self._env = _open_environment(self.path, map_size, sync=durable, metasync=durable)
            self._dbs = open_handles(self._env)
        except lmdb.Error as exc:
            self._forget_path()
            raise StoreError(f"cannot open store: {exc}") from None
        self.cipher = cipher
        self._gate = _ReaderGate()
        self._failed: BaseException | None = None
        # (operation, its future, whether it is a bookkeeping write), or None to stop.
        self._queue: queue.Queue[
            tuple[Callable[[Txn], object], concurrent.futures.Future[object], bool] | None
        ]
        self._queue = queue.Queue()
        self._env.reader_check()
        try:
            self._write_with_retry(_check_format, bookkeeping=True)
        except BaseException:  # refused format, full map, failed write: nothing stays open
            self._env.close()
            self._forget_path()
            raise
        self._writer = threading.Thread(target=self._run_writer, name="idlink-writer", daemon=True)
        self._writer.start()

    # -- lifecycle ---------------------------------------------------------

    def _forget_path(self) -> None:
        with _open_paths_lock:
            if _open_paths.get(self.path) == os.getpid():
                del _open_paths[self.path]

    def close(self) -> None:
        """Finish queued writes, stop the writer and close the environment."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        self._env.close()
        self._forget_path()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def healthy(self) -> bool:
        return self._failed is None and self._writer.is_alive()

    def probe(self, min_free_bytes: int, timeout: float) -> tuple[bool | None, str]:
        """(writable, why not): reopen a failed store, check the disk, commit a tiny write.

        ``None`` means "cannot tell yet": the writer is busy with a long write.
        """
        if not self.healthy:
            try:
                self.reopen()
            except StoreError as exc:
                return False, exc.message
        try:
            free = shutil.disk_usage(self.path).free
        except OSError as exc:
            return False, f"cannot stat the store's disk: {exc}"
        if free < min_free_bytes:
            return False, f"{free} bytes free on the store's disk (at least {min_free_bytes})"
        try:
            stamp = time.time_ns().to_bytes(8, "big")
            probe = self.submit(lambda txn: txn.put_meta(PROBE_KEY, stamp), bookkeeping=True)
            probe.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return None, "the writer is busy"
        except IdlinkError as exc:
            return False, exc.message
        return True, ""

    def reopen(self) -> None:
        """Open the environment again after a failed write stopped the writer (design.md).

        Waits until no read transaction of this process is open; queued writes
        have already failed. Raises StoreError when the store cannot be opened.
        """
        if self.healthy:
            return
        if not hasattr(self, "_reopen_args"):
            self._reopen_args: tuple[int, Any] | None = None
        with self._gate.exclusive():
            # Kept across attempts: once closed, the old environment cannot say them.
            if self._reopen_args is None:
                self._reopen_args = (self._env.info()["map_size"], self._env.flags())
                self._env.close()
            map_size, flags = self._reopen_args  # type: ignore[misc]
            try:
                self._env = _open_environment(
                    self.path, map_size, sync=flags["sync"], metasync=flags["metasync"]
                )
                self._dbs = open_handles(self._env)
            except lmdb.Error as exc:
                raise StoreError(f"cannot reopen store: {exc}") from None
            self._reopen_args = None
            self._env.reader_check()
            # Writes queued after the writer stopped were never run: fail them.
            self._fail_pending(StoreError("the store failed a write and was reopened; retry"))
            self._queue = queue.Queue()
            self._failed = None
            self._writer = threading.Thread(
                target=self._run_writer, name="idlink-writer", daemon=True
            )
            self._writer.start()
        log.warning("store reopened after a failed write")

    # -- transactions --------------------------------------------------------

    def read(self) -> _Read:
        """Open a read transaction (any thread, concurrent with the writer).

        A context manager giving the :class:`Txn`; a class, not a generator:
        a resolve served from the cache is little more than this.
        """
        return _Read(self)

    def write(self, fn: Callable[[Txn], T], *, bookkeeping: bool = False) -> T:
        """Run ``fn`` in one write transaction on the writer thread and return its result.

        Everything ``fn`` does commits together or not at all. Every write
        transaction bumps the store's data version (docs/serving.md), except a
        ``bookkeeping`` one: it may write only the audit log and the health
        probe (anything else raises :class:`~idlink.store.serving.BookkeepingOnly` and rolls back),
        which no read answer depends on.
        """
        future = self.submit(fn, bookkeeping=bookkeeping)
        return future.result()

    def submit(
        self, fn: Callable[[Txn], T], *, bookkeeping: bool = False
    ) -> concurrent.futures.Future[T]:
        if self._failed is not None:
            raise StoreError("the store failed a write earlier and must be reopened")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future, bookkeeping))  # type: ignore[arg-type]
        return future

    def _run_writer(self) -> None:
        last_check = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=READER_CHECK_SECONDS)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if time.monotonic() - last_check >= READER_CHECK_SECONDS:
                self.reader_check()
                last_check = time.monotonic()
            if item is None:
                return
            if not item:
                continue
            fn, future, bookkeeping = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = self._write_with_retry(fn, bookkeeping=bookkeeping)
            except StoreError as exc:
                self._failed = exc
                future.set_exception(exc)
                self._fail_pending(exc)
                return
            except BaseException as exc:  # the operation's own error: rolled back
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _fail_pending(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item:
                item[1].set_exception(exc)

    def _write_with_retry(self, fn: Callable[[Txn], T], *, bookkeeping: bool = False) -> T:
        resized = 0
        while True:
            with self._gate.reading():
                outcome, result = self._write_once(fn, bookkeeping)
            if outcome == "done":
                return result  # type: ignore[return-value]
            if outcome == "resized":
                resized += 1
                if resized > MAP_RESIZED_RETRIES:
                    raise StoreError("store write failed: the map keeps growing under this process")
                self._adopt_map_size()
            else:
                self._grow_or_fail()

    def _write_once(self, fn: Callable[[Txn], T], bookkeeping: bool) -> tuple[str, T | None]:
        """One attempt: ("done", result), or ("resized" | "full", None) after a rollback."""
        try:
            raw = self._env.begin(write=True)
        except lmdb.MapResizedError:
            return "resized", None
        except lmdb.Error as exc:
            raise StoreError(f"store write failed: {exc}") from None
        try:
            scoped = bookkeeping_raw(raw, self._dbs) if bookkeeping else raw
            txn = Txn(scoped, self._dbs, writable=True, cipher=self.cipher)
            result = fn(txn)
            txn.flush_writes()  # whatever fn left in a write-back buffer is committed too
            if not bookkeeping:
                bump_data_version(raw, self._dbs)
        except lmdb.MapFullError:
            raw.abort()
            return "full", None
        except lmdb.Error as exc:
            raw.abort()
            raise StoreError(f"store write failed: {exc}") from None
        except BaseException:
            raw.abort()
            raise
        try:
            raw.commit()
        except lmdb.MapFullError:
            return "full", None
        except lmdb.Error as exc:
            log.error("store commit failed, writer stopped: %s", exc)
            raise StoreError(f"store commit failed: {exc}") from None
        return "done", result

    def _adopt_map_size(self) -> None:
        """Take up the map size another process has grown the store to (MDB_MAP_RESIZED)."""
        with self._gate.exclusive():
            before = self._env.info()["map_size"]
            try:
                self._env.set_mapsize(0)
            except lmdb.Error as exc:
                raise StoreError(f"cannot adopt the store's new map size: {exc}") from None
            after = self._env.info()["map_size"]
        log.info(
            "store map size adopted from another process: %d MiB (was %d MiB)",
            after >> 20,
            before >> 20,
        )

    def _grow_or_fail(self) -> None:
        # --map-size bounds what this process grows to. A size another process
        # recorded in the file is not taken up here (a command's larger default
        # would lift the bound): only once the file outgrows this process's map
        # (MDB_MAP_RESIZED, _adopt_map_size), because then it must.
        with self._gate.exclusive():
            size = self._env.info()["map_size"]
            if self.multi_process:
                raise StoreFull(
                    f"the store map ({size >> 20} MiB) is full; raise --map-size and restart"
                )
            self._env.set_mapsize(size * 2)
        log.info("store map grown to %d MiB", (size * 2) >> 20)

    # -- maintenance --------------------------------------------------------

    def reader_check(self) -> int:
        with self._gate.reading():
            return int(self._env.reader_check())

    def stats(self) -> dict[str, int]:
        with self._gate.reading():
            info = self._env.info()
            stat_ = self._env.stat()
        return {
            "map_size": info["map_size"],
            "last_pgno": info["last_pgno"],
            "page_size": stat_["psize"],
            "used_bytes": (info["last_pgno"] + 1) * stat_["psize"],
            "readers": info["num_readers"],
        }

    def backup(self, dest: str | os.PathLike[str], *, compact: bool = True) -> None:
        """Write a consistent copy of the store into the empty folder ``dest`` (mode 0600)."""
        folder = os.fspath(dest)
        secure_folder(folder)
        target = os.path.join(folder, DATA_FILE)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"backup failed: {exc}") from None
        try:
            for _ in range(MAP_RESIZED_RETRIES):
                with self._gate.reading():
                    try:
                        self._env.copyfd(fd, compact=compact)
                        break
                    except lmdb.MapResizedError:
                        os.ftruncate(fd, 0)
                        os.lseek(fd, 0, os.SEEK_SET)
                self._adopt_map_size()
            else:
                raise StoreError("backup failed: the map keeps growing under this process")
            os.fsync(fd)
        except lmdb.Error as exc:
            os.close(fd)
            os.unlink(target)
            raise StoreError(f"backup failed: {exc}") from None
        except BaseException:
            os.close(fd)
            os.unlink(target)
            raise
        os.close(fd)
        _fsync_folder(folder)


def _check_format(txn: Txn) -> None:
    found = txn.get_meta(b"format")
    if found is None:
        txn.put_meta(b"format", FORMAT_VERSION)
    elif found != FORMAT_VERSION:
        found_text = found.decode(errors="replace")
        raise StoreFormatError(
            f"store format {found_text} is not {FORMAT_VERSION.decode()}: this version of "
            "idlink cannot read it (docs/operations.md, store format)"
        )


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- compaction ----------------------------------------------------------------------------


def compact_in_place(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Rewrite ``data.mdb`` without its free pages; its size before and after, in bytes.

    LMDB reuses the pages a write frees but never clears them, so erased
    values stay in the file until their pages are written again
    (docs/security.md). The compacting copy holds only the pages in use; it
    replaces ``data.mdb`` atomically, and the old file is overwritten with
    zeros before it is let go. The folder must be idle: no server (its lock)
    and no other process with the store open (LMDB keeps a shared lock on
    ``lock.mdb`` for as long as a process has the store open). Processes that
    open the store meanwhile wait for the end; a server refuses to start.
    """
    folder = os.path.realpath(os.fspath(path))
    data = os.path.join(folder, DATA_FILE)
    if not os.path.isfile(data):
        raise StoreError(f"no idlink store in {folder}")
    with _open_paths_lock:
        if folder in _open_paths:
            raise StoreError(f"store {folder} is open in this process")
    with server_lock(folder, "idlink compact"), _alone_in(folder):
        secure_folder(folder)
        before = os.path.getsize(data)
        # A copy left by an interrupted compaction was never the store: drop it.
        for name in os.listdir(folder):
            if name.startswith(".compact-") and name.endswith(".mdb"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
        # Old account ids a load left half dropped go first (docs/operations.md).
        _finish_drops(folder, map_size=max(DEFAULT_MAP_SIZE, before))
        temporary = os.path.join(folder, f".compact-{os.getpid()}.mdb")
        counts = _copy_compacted(folder, temporary, map_size=max(DEFAULT_MAP_SIZE, before))
        try:
            copied = _entry_counts(temporary, subdir=False)
        except lmdb.Error as exc:
            os.unlink(temporary)
            raise StoreError(f"the compacted copy does not open: {exc}") from None
        if copied != counts:
            os.unlink(temporary)
            raise StoreError("the compacted copy differs from the store; the store is unchanged")
        old = os.open(data, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.replace(temporary, data)
            _fsync_folder(folder)
            _zero(old)
        finally:
            os.close(old)
        after = os.path.getsize(data)
        # The first process to open a store sets up lock.mdb for it. Do it now,
        # while the lock is still ours: a process waiting to open the store
        # must find a lock table that describes the new file.
        _open_environment(folder, max(DEFAULT_MAP_SIZE, after), sync=True, metasync=True).close()
    return before, after


@contextmanager
def _alone_in(folder: str) -> Iterator[None]:
    """Hold the write lock LMDB's openers take on the first byte of lock.mdb."""
    fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise StoreError(f"cannot lock the store in {folder}: {exc}") from None
        raise StoreInUse(
            f"another process has the store in {folder} open (an idlink command, or a "
            "server's workers); try again once it has finished"
        ) from None
    try:
        yield
    finally:
        os.close(fd)  # also releases LMDB's locks of this process on the file


DROP_BATCH = 20_000  # entries deleted per transaction when an account id is dropped


def _finish_drops(folder: str, *, map_size: int) -> int:
    """Drop every account id a load marked as being dropped; the entries deleted.

    The folder is ours alone (:func:`_alone_in`); each batch is its own
    transaction, so an interrupted compaction leaves a drop to resume.
    """
    env = lmdb.open(
        folder,
        map_size=map_size,
        max_dbs=len(SUBDATABASES) + 1,
        subdir=True,
        lock=False,  # the folder is ours alone (_alone_in); LMDB's lock would undo ours
    )
    total = 0
    try:
        with env.begin() as raw:
            meta = env.open_db(b"meta", txn=raw, create=False)
            if raw.get(b"format", db=meta) != FORMAT_VERSION:
                return 0  # _copy_compacted names the format
        dbs = open_handles(env)
        while True:
            with env.begin(write=True) as raw:
                txn = Txn(raw, dbs, writable=True)
                pending = txn.dropping()
                if not pending:
                    return total
                bump_data_version(raw, dbs)
                deleted = txn.account(pending[0]).drop_some(DROP_BATCH)
                if deleted < DROP_BATCH:
                    txn.unmark_dropping(pending[0])
            total += deleted
    except lmdb.Error as exc:
        raise StoreError(f"compaction failed dropping an old account id: {exc}") from None
    finally:
        env.close()


def _copy_compacted(folder: str, target: str, *, map_size: int) -> dict[str, int]:
    """Copy the store in ``folder`` without free pages into ``target``; its entry counts."""
    source = lmdb.open(
        folder,
        map_size=map_size,
        max_dbs=len(SUBDATABASES) + 1,
        subdir=True,
        readonly=True,
        lock=False,  # the folder is ours alone (_alone_in); LMDB's lock would undo ours
    )
    try:
        with source.begin() as txn:
            meta = source.open_db(b"meta", txn=txn, create=False)
            found = txn.get(b"format", db=meta)
        if found != FORMAT_VERSION:
            found_text = "none" if found is None else bytes(found).decode(errors="replace")
            raise StoreFormatError(
                f"store format {found_text} is not {FORMAT_VERSION.decode()}; not compacted"
            )
        counts = _counts_of(source)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            source.copyfd(fd, compact=True)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(target)
            raise
        os.close(fd)
    except lmdb.Error as exc:
        raise StoreError(f"compaction failed: {exc}") from None
    finally:
        source.close()
    return counts


def _entry_counts(path: str, *, subdir: bool) -> dict[str, int]:
    env = lmdb.open(path, max_dbs=len(SUBDATABASES) + 1, subdir=subdir, readonly=True, lock=False)
    try:
        return _counts_of(env)
    finally:
        env.close()


def _counts_of(env: Any) -> dict[str, int]:
    counts = {}
    with env.begin() as txn:
        for name in SUBDATABASES:
            try:
                db = env.open_db(name.encode(), txn=txn, create=False)
            except lmdb.NotFoundError:
                counts[name] = 0
                continue
            counts[name] = int(txn.stat(db)["entries"])
    return counts


def _zero(fd: int) -> None:
    """Overwrite a whole file with zeros and flush it to disk."""
    size = os.fstat(fd).st_size
    block = bytes(1 << 20)
    offset = 0
    while offset < size:
        offset += os.pwrite(fd, block[: min(len(block), size - offset)], offset)
    os.fsync(fd)
