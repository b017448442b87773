"""What every servicer shares: the engine, the thread pool, idempotency keys, change wake-ups.

The engine is synchronous (LMDB). Writes and long reads run on a thread pool
(writes then wait for the store's one writer thread); short reads run inline
on the event loop (:meth:`Runtime.read`). Work on the pool sees none of the
calling task's context variables, so everything it needs about the caller
(the principal that decides masking, the actor) is passed to it explicitly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from grpc import aio

from idlink.domain.contacts import check_text
from idlink.domain.engine import IdentityEngine
from idlink.errors import FailedPrecondition, NotFound
from idlink.security.roles import Principal
from idlink.service.metrics import Metrics
from idlink.v1 import common_pb2

T = TypeVar("T")
M = TypeVar("M", bound=Message)

ACTOR_METADATA_KEY = "idlink-actor"
MAX_ASSERTED_ACTOR_CHARS = 128
MAX_REQUEST_ID_BYTES = 128
IDEMPOTENCY_TTL_SECONDS = 600.0
IDEMPOTENCY_MAX_ENTRIES = 10_000
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
CHANGE_POLL_SECONDS = 0.5
# The cyclic collector's thresholds while a server runs (Python's default: 700, 10, 10).
# A served process keeps its serving cache, converted responses and admissions
# (hundreds of thousands of objects, long-lived): with the default, a full
# collection walks them all every time the heap has grown by a quarter, a pause
# of 0.2 to 0.5 s on a loaded machine and about a tenth of the server's CPU
# while the cache fills (measured on the resolve benchmark, docs/serving.md).
# Young cycles are still collected, in larger, rarer batches.
SERVER_GC_THRESHOLDS = (50_000, 50, 100)


def tune_collector() -> None:
    """Set the cyclic collector's thresholds for a long-running server process."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def asserted_actor(context: aio.ServicerContext) -> str:
    """The ``idlink-actor`` metadata: who the client says is behind the call ("" if none)."""
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_METADATA_KEY and isinstance(value, str):
            return value[:MAX_ASSERTED_ACTOR_CHARS]
    return ""


def actor(viewer: Principal, context: aio.ServicerContext) -> str:
    """Who a call is recorded as in history and on manual records ("" for no caller).

    The authenticated key and its role, ``key:key_0123 (writer)``. A name the
    client asserts in ``idlink-actor`` metadata is kept beside it, quoted and
    labelled as asserted, ``key:key_0123 (writer, asserted: "jane")``: nothing
    checks it, so it never stands in for the key.
    """
    if not viewer.key_id:
        return ""
    role = viewer.role_name or "no role"
    asserted = asserted_actor(context)
    if not asserted:
        return f"key:{viewer.key_id} ({role})"
    return f"key:{viewer.key_id} ({role}, asserted: {json.dumps(asserted, ensure_ascii=False)})"


def request_digest(request: Message) -> bytes:
    """A digest of a request without its ``request_id``: what an idempotency key stands for."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


def _shown_customers(message: Message) -> tuple[bytes, ...]:
    """The customers an answer shows (a cached answer is void once one is gone)."""
    texts: list[str] = []
    if isinstance(message, common_pb2.Customer):
        texts.append(message.customer_pid)
    else:
        fields = message.DESCRIPTOR.fields_by_name
        if "customer" in fields and message.HasField("customer"):
            texts.append(message.customer.customer_pid)  # type: ignore[attr-defined]
        if "pinned_customer_pid" in fields:
            texts.append(message.pinned_customer_pid)  # type: ignore[attr-defined]
    pids = []
    for text in texts:
        if text:
            with contextlib.suppress(ValueError):
                pids.append(uuid.UUID(text).bytes)
    return tuple(pids)


# An idempotency key: (caller's key id, account, method, request id).
_Key = tuple[str, str, str, str]


@dataclass(slots=True)
class _Answer:
    """A mutation's answer kept for retries, with the digest of the request it answered."""

    stamp: float
    digest: bytes
    message_type: type[Message] | None  # None: only the digest is kept, a retry runs again
    raw: bytes
    customers: tuple[bytes, ...]


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
        if self._thread.is_alive():  # a server that failed to start never started it
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
        tune_collector()  # one Runtime per server process: it serves until the process ends
        self.metrics = Metrics()  # the server replaces it with the one it serves
        self.stopping = asyncio.Event()
        self._done: OrderedDict[_Key, _Answer] = OrderedDict()
        self._running: dict[_Key, tuple[bytes, asyncio.Future[Message]]] = {}

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
        self,
        method: str,
        viewer: Principal,
        account: str,
        request: Message,
        produce: Callable[[], Awaitable[M]],
        *,
        keep_answer: bool = True,
    ) -> M:
        """Run a mutation once per idempotency key; a retry of the same request gets its answer.

        The key is the caller's API key, the account, the method and the
        request's ``request_id``: two callers never share answers, so nobody
        is shown an answer made for another role. It stands for one request
        (a digest of it without the request id): the same id with a different
        request is FAILED_PRECONDITION (``IDEMPOTENCY_KEY_REUSED``) and runs
        nothing. Answers are kept in memory for ten minutes (per server
        process). A call that failed is not kept: it changed nothing, so a
        retry runs again. An answer that shows a customer who is gone since
        (erased, also by another process) is dropped and the retry runs
        again. With ``keep_answer=False`` only the digest is kept and a retry
        runs again (for calls whose domain already answers a retry the same).
        """
        request_id = str(getattr(request, "request_id", ""))
        if not request_id:
            return await produce()
        check_text(request_id, "request_id", MAX_REQUEST_ID_BYTES)
        key: _Key = (viewer.key_id, account, method, request_id)
        digest = request_digest(request)
        self._expire()
        done = self._done.get(key)
        if done is not None:
            _check_same_request(method, done.digest, digest)
            if done.message_type is None:
                return await produce()
            if self._still_shown(account, done.customers):
                return done.message_type.FromString(done.raw)  # type: ignore[return-value]
            del self._done[key]
        running = self._running.get(key)
        if running is not None:
            _check_same_request(method, running[0], digest)
            return await asyncio.shield(running[1])  # type: ignore[return-value]
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._running[key] = (digest, future)
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
        if keep_answer:
            answer = _Answer(
                time.monotonic(),
                digest,
                type(result),
                result.SerializeToString(),
                _shown_customers(result),
            )
        else:
            answer = _Answer(time.monotonic(), digest, None, b"", ())
        self._done[key] = answer
        while len(self._done) > IDEMPOTENCY_MAX_ENTRIES:
            self._done.popitem(last=False)
        return result

    def forget_account(self, account: str) -> None:
        """Drop every kept answer of an account (after an erasure: none may show erased data)."""
        for key in [k for k in self._done if k[1] == account]:
            del self._done[key]

    def _still_shown(self, account: str, customers: tuple[bytes, ...]) -> bool:
        for pid in customers:
            try:
                self.read(self.engine.get_customer, account, pid)
            except NotFound:
                return False
        return True

    def _expire(self) -> None:
        limit = time.monotonic() - IDEMPOTENCY_TTL_SECONDS
        while self._done:
            key, answer = next(iter(self._done.items()))
            if answer.stamp >= limit:
                return
            del self._done[key]


def _check_same_request(method: str, kept: bytes, given: bytes) -> None:
    if kept != given:
        raise FailedPrecondition(
            f"request_id was already used for a different {method} request in the last "
            f"{IDEMPOTENCY_TTL_SECONDS / 60:.0f} minutes: a new request needs a new request_id",
            reason=IDEMPOTENCY_KEY_REUSED,
            field="request_id",
        )
