"""The LMDB environment: opening, the single writer thread, read transactions.

Operating rules (py-lmdb docs): one environment per process and path, opened
after any fork; one thread owns every write transaction; dead readers are
cleared with ``reader_check``; a failed commit stops the writer, because the
environment can no longer be trusted. A full map rolls back the operation,
then a single-process store grows the map and retries; with several processes
growing is unsafe (py-lmdb issue 269), so a full map is a clear error there.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import lmdb

from idlink.domain.errors import StoreError, StoreFormatError, StoreFull
from idlink.store.txn import SUBDATABASES, Txn

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT_VERSION = b"1"
DEFAULT_MAP_SIZE = 1 << 30
MULTI_PROCESS_MAP_SIZE = 64 << 30
READER_CHECK_SECONDS = 30.0

_open_paths: dict[str, int] = {}
_open_paths_lock = threading.Lock()


class _ReaderGate:
    """Lets the writer wait until no read transaction is open in this process.

    LMDB allows ``set_mapsize`` only while the process has no transaction open.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._closed = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._closed = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()


class Store:
    """An LMDB store in one folder, with one writer thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None = None,
        multi_process: bool = False,
        durable: bool = True,
        cipher: Any = None,
    ) -> None:
        """Open (or create) the store in folder ``path``.

        Values are sealed with ``cipher`` (SPEC 8); by default the data keys of
        the folder (``idlink.security.crypto``, created on first use).
        """
        self.path = os.path.realpath(os.fspath(path))
        self.multi_process = multi_process
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        with _open_paths_lock:
            if _open_paths.get(self.path) == os.getpid():
                raise StoreError(f"store {self.path} is already open in this process")
            _open_paths[self.path] = os.getpid()
        if map_size is None:
            map_size = MULTI_PROCESS_MAP_SIZE if multi_process else DEFAULT_MAP_SIZE
        try:
            self._env = lmdb.open(
                self.path,
                map_size=map_size,
                max_dbs=len(SUBDATABASES) + 1,
                max_readers=512,
                sync=durable,
                metasync=durable,
                subdir=True,
                lock=True,
            )
            self._dbs = {
                name: self._env.open_db(name.encode(), dupsort=dupsort)
                for name, dupsort in SUBDATABASES.items()
            }
        except lmdb.Error as exc:
            self._forget_path()
            raise StoreError(f"cannot open store: {exc}") from None
        if cipher is None:
            from idlink.security.crypto import Cipher

            try:
                cipher = Cipher.for_data_dir(self.path)
            except (OSError, ValueError) as exc:
                self._env.close()
                self._forget_path()
                raise StoreError(f"cannot read the data keys: {exc}") from None
        self.cipher = cipher
        self._gate = _ReaderGate()
        self._failed: BaseException | None = None
        self._queue: queue.Queue[
            tuple[Callable[[Txn], object], concurrent.futures.Future[object]] | None
        ]
        self._queue = queue.Queue()
        self._env.reader_check()
        self._check_format()
        self._writer = threading.Thread(target=self._run_writer, name="idlink-writer", daemon=True)
        self._writer.start()

    # -- lifecycle ---------------------------------------------------------

    def _forget_path(self) -> None:
        with _open_paths_lock:
            if _open_paths.get(self.path) == os.getpid():
                del _open_paths[self.path]

    def _check_format(self) -> None:
        with self._env.begin(write=True, db=self._dbs["meta"]) as raw:
            found = raw.get(b"format")
            if found is None:
                raw.put(b"format", FORMAT_VERSION)
            elif found != FORMAT_VERSION:
                self._env.close()
                self._forget_path()
                found_text = found.decode(errors="replace")
                raise StoreFormatError(
                    f"store format {found_text} is not {FORMAT_VERSION.decode()}"
                )

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
                self._env = lmdb.open(
                    self.path,
                    map_size=map_size,
                    max_dbs=len(SUBDATABASES) + 1,
                    max_readers=512,
                    sync=flags["sync"],
                    metasync=flags["metasync"],
                    subdir=True,
                    lock=True,
                )
                self._dbs = {
                    name: self._env.open_db(name.encode(), dupsort=dupsort)
                    for name, dupsort in SUBDATABASES.items()
                }
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

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """Open a read transaction (any thread, concurrent with the writer)."""
        with self._gate.reading():
            try:
                with self._env.begin(write=False) as raw:
                    yield Txn(raw, self._dbs, writable=False, cipher=self.cipher)
            except lmdb.Error as exc:
                raise StoreError(f"store read failed: {exc}") from None

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in one write transaction on the writer thread and return its result.

        Everything ``fn`` does commits together or not at all.
        """
        future = self.submit(fn)
        return future.result()

    def submit(self, fn: Callable[[Txn], T]) -> concurrent.futures.Future[T]:
        if self._failed is not None:
            raise StoreError("the store failed a write earlier and must be reopened")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))  # type: ignore[arg-type]
        return future

    def _run_writer(self) -> None:
        last_check = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=READER_CHECK_SECONDS)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if time.monotonic() - last_check >= READER_CHECK_SECONDS:
                self._env.reader_check()
                last_check = time.monotonic()
            if item is None:
                return
            if not item:
                continue
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = self._write_with_retry(fn)
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

    def _write_with_retry(self, fn: Callable[[Txn], T]) -> T:
        while True:
            raw = self._env.begin(write=True)
            try:
                result = fn(Txn(raw, self._dbs, writable=True, cipher=self.cipher))
            except lmdb.MapFullError:
                raw.abort()
                self._grow_or_fail()
                continue
            except lmdb.Error as exc:
                raw.abort()
                raise StoreError(f"store write failed: {exc}") from None
            except BaseException:
                raw.abort()
                raise
            try:
                raw.commit()
            except lmdb.MapFullError:
                self._grow_or_fail()
                continue
            except lmdb.Error as exc:
                log.error("store commit failed, writer stopped: %s", exc)
                raise StoreError(f"store commit failed: {exc}") from None
            return result

    def _grow_or_fail(self) -> None:
        size = self._env.info()["map_size"]
        if self.multi_process:
            raise StoreFull(
                f"the store map ({size >> 20} MiB) is full; raise --map-size and restart"
            )
        with self._gate.exclusive():
            self._env.set_mapsize(size * 2)
        log.info("store map grown to %d MiB", (size * 2) >> 20)

    # -- maintenance --------------------------------------------------------

    def reader_check(self) -> int:
        return int(self._env.reader_check())

    def stats(self) -> dict[str, int]:
        info = self._env.info()
        stat = self._env.stat()
        return {
            "map_size": info["map_size"],
            "last_pgno": info["last_pgno"],
            "page_size": stat["psize"],
            "used_bytes": (info["last_pgno"] + 1) * stat["psize"],
            "readers": info["num_readers"],
        }

    def backup(self, dest: str | os.PathLike[str], *, compact: bool = True) -> None:
        """Write a consistent copy of the store into the empty folder ``dest``."""
        os.makedirs(dest, mode=0o700, exist_ok=True)
        try:
            self._env.copy(os.fspath(dest), compact=compact)
        except lmdb.Error as exc:
            raise StoreError(f"backup failed: {exc}") from None
