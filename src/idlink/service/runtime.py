"""What every servicer shares: the engine, the thread pool, idempotency keys, change wake-ups.

The engine is synchronous (LMDB); its calls run on a thread pool so the event
loop never blocks. Writes still go through the store's one writer thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from grpc import aio

from idlink.domain.contacts import check_text
from idlink.domain.engine import IdentityEngine
from idlink.service.metrics import Metrics

T = TypeVar("T")
M = TypeVar("M", bound=Message)

ACTOR_METADATA_KEY = "idlink-actor"
MAX_REQUEST_ID_BYTES = 128
IDEMPOTENCY_TTL_SECONDS = 600.0
IDEMPOTENCY_MAX_ENTRIES = 10_000
CHANGE_POLL_SECONDS = 0.5


def actor(context: aio.ServicerContext) -> str:
    """The caller's identity for history and audit ("" when not given).

    Authentication (``authorization: Bearer <token>``) is not enforced yet; the
    ``idlink-actor`` metadata names the person or system behind a call.
    """
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_METADATA_KEY and isinstance(value, str):
            return value[:128]
    return ""


class ChangeNotifier:
    """Wakes WatchChanges streams when a write may have added change events.

    One thread waits on the engine's change condition with a short timeout and
    wakes every waiter on the event loop; the timeout doubles as a poll, which
    also catches writes made by other processes sharing the store.
    """

    def __init__(self, engine: IdentityEngine, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop
        self._event = asyncio.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="idlink-changes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._engine._notify()
        self._thread.join(timeout=5)

    @property
    def event(self) -> asyncio.Event:
        """The event the next wake-up sets: take it *before* reading the feed."""
        return self._event

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _pump(self) -> None:
        while not self._stop.is_set():
            self._engine.wait_for_change(CHANGE_POLL_SECONDS)
            try:
                self._loop.call_soon_threadsafe(self._fire)
            except RuntimeError:  # the loop is closed: the server is gone
                return


class Runtime:
    """The engine and the machinery around it for one server."""

    def __init__(
        self,
        engine: IdentityEngine,
        executor: concurrent.futures.ThreadPoolExecutor,
        notifier: ChangeNotifier,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.notifier = notifier
        self.metrics = Metrics()  # the server replaces it with the one it serves
        self.stopping = asyncio.Event()
        self._done: OrderedDict[tuple[str, str, str], tuple[float, type[Message], bytes]]
        self._done = OrderedDict()
        self._running: dict[tuple[str, str, str], asyncio.Future[Message]] = {}

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking engine call on the thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a short engine read on the event loop thread itself.

        Reads are tens of microseconds over memory-mapped pages and never wait
        on the writer. py-lmdb releases the GIL around every LMDB call, so the
        same read on a pool thread hands the GIL back and forth with every
        other busy thread: inline it costs a third of that under load.
        """
        return fn(*args, **kwargs)

    async def idempotent(
        self, method: str, account: str, request_id: str, produce: Callable[[], Awaitable[M]]
    ) -> M:
        """Run a mutation once per request id; a retry gets the first answer.

        Answers are kept in memory for ten minutes (per server process). A call
        that failed is not kept: it changed nothing, so a retry runs again.
        """
        if not request_id:
            return await produce()
        check_text(request_id, "request_id", MAX_REQUEST_ID_BYTES)
        key = (method, account, request_id)
        self._expire()
        done = self._done.get(key)
        if done is not None:
            _, message_type, raw = done
            return message_type.FromString(raw)  # type: ignore[return-value]
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)  # type: ignore[return-value]
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await produce()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._running[key]
        future.set_result(result)
        self._done[key] = (time.monotonic(), type(result), result.SerializeToString())
        while len(self._done) > IDEMPOTENCY_MAX_ENTRIES:
            self._done.popitem(last=False)
        return result

    def _expire(self) -> None:
        limit = time.monotonic() - IDEMPOTENCY_TTL_SECONDS
        while self._done:
            key, (stamp, _, _) = next(iter(self._done.items()))
            if stamp >= limit:
                return
            del self._done[key]
