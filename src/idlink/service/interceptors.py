"""The server interceptors' shared plumbing, load shedding, malformed requests and call logs.

Two layers wrap every idlink method: :class:`CallInterceptor` (here: load
shedding, the tolerant parse, metrics and call logs) and
``auth.AuthInterceptor`` (admission and audit). The server runs them as one
interceptor: the auth interceptor, given the call interceptor, wraps each
handler with both in one pass (one ``intercept_service`` and one re-wrap per
call); each can also run alone. Both re-wrap the four handler kinds with
:func:`rewrap` and name a call's outcome with :func:`outcome`.

The rules both keep (SPEC 9, docs/operations.md): a servicer context is
touched only while its call is live, since gRPC frees the call when the
handler's task ends and a finished call's context used later (a generator
closed by the garbage collector, say) crashes the process. So the peer of a
call that is logged is read before its wrapper returns, the outcome is taken
from the exception that ended the handler, and a streaming handler is run as
a writer (``context.write``) that closes the handler's generator before
returning.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from idlink.errors import InvalidArgument, ResourceExhausted
from idlink.service import encoded
from idlink.service.metrics import Metrics
from idlink.service.status import abort_with

log = logging.getLogger("idlink.server")

SLOW_CALL_SECONDS = 0.25
# Health and reflection are served as they come: no gate, no key, no audit.
EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

# gRPC core keeps calls that arrived before the server asked for them in a queue
# of its own, and beyond ``grpc.server.max_pending_requests`` (default 1000, and
# surely beyond the hard limit, default 3000) it drops them at random: the
# client sees a bare CANCELLED and nothing here knows (docs/operations.md,
# "Load shedding"). The queue is made far longer than any burst the gates below
# let through, so that calls reach the gates and are shed with a status.
CORE_PENDING_REQUESTS = 100_000
CORE_PENDING_REQUESTS_HARD_LIMIT = 200_000
# A shed is logged at most this often (with the count since the last line).
SHED_LOG_SECONDS = 1.0
SHED_REASON = "SERVER_BUSY"
MALFORMED_REASON = "MALFORMED_REQUEST"
_MALFORMED_MESSAGE = "the request is not a valid message of this method's type"


# -- the shared plumbing ------------------------------------------------------------------


# Wraps one handler behaviour, told whether requests stream and whether the
# behaviour is a generator whose answers the wrapper must write.
Wrapper = Callable[[Callable[..., Any], bool, bool], Callable[..., Any]]


_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def rewrap(
    handler: grpc.RpcMethodHandler,
    wrap: Wrapper,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """The same method handler with its behaviour wrapped, whichever of the four kinds it is.

    ``writes`` tells the wrapper that the behaviour is an async generator: its
    wrapper must then write the answers itself (``context.write``) and close
    the generator inside the call.
    """
    for name, make, streaming_requests in _KINDS:
        behavior = getattr(handler, name)
        if behavior is not None:
            return make(  # type: ignore[no-any-return]
                wrap(behavior, streaming_requests, inspect.isasyncgenfunction(behavior)),
                request_deserializer=request_deserializer or handler.request_deserializer,
                # A handler may answer with an already encoded message (service/encoded.py).
                response_serializer=encoded.serializer(handler.response_serializer),
            )
    return handler


def code_name(code: Any, default: str) -> str:
    """The name of a status code as ``ServicerContext.code()`` gives it (``default`` if unset)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return default


def aborted_code(context: aio.ServicerContext) -> str:
    """The code an abort just recorded (call it only while the call is live)."""
    try:
        return code_name(context.code(), "UNKNOWN")
    except Exception:  # older grpc: no code() on the servicer context
        return "UNKNOWN"


def outcome(exc: BaseException, context: aio.ServicerContext) -> str:
    """The outcome of a call that the exception ``exc`` ended, as a code name."""
    if isinstance(exc, aio.AbortError):
        return aborted_code(context)
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


def peer(context: aio.ServicerContext) -> str:
    """The caller's address, read at the start of the call (reporting only)."""
    try:
        return str(context.peer())
    except Exception:  # reporting only
        return ""


async def write_all(responses: AsyncIterator[Any], context: aio.ServicerContext) -> None:
    """Write every answer of a generator handler, and close it before returning."""
    try:
        async for item in responses:
            await context.write(item)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


# -- malformed requests ---------------------------------------------------------------------


class _Malformed:
    """Stands for request bytes that are not a valid message of the method's type."""

    def __init__(self, error: str) -> None:
        self.error = error


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns ``_Malformed`` instead of raising.

    gRPC answers a deserializer's exception with UNKNOWN and logs a traceback;
    malformed bytes are the caller's fault, so they get INVALID_ARGUMENT.
    """
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(type(exc).__name__)

    return parse


def _malformed() -> InvalidArgument:
    return InvalidArgument(_MALFORMED_MESSAGE, reason=MALFORMED_REASON)


async def parsed(request: Any, context: aio.ServicerContext, streaming: bool) -> Any:
    """The request, or the stream of requests, refusing malformed messages."""
    if not streaming:
        if isinstance(request, _Malformed):
            await abort_with(context, _malformed())
        return request

    async def checked() -> Any:
        async for message in request:
            if isinstance(message, _Malformed):
                raise _malformed()
            yield message

    return checked()


# -- load shedding and call logs ---------------------------------------------------------


class _Gate:
    """A bound on calls in flight; beyond it calls are refused, not queued."""

    def __init__(self, limit: int, kind: str) -> None:
        self.limit = limit
        self.kind = kind
        self.active = 0

    def enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


class CallInterceptor(aio.ServerInterceptor):
    """Sheds load beyond the limits, counts every call, logs failed and slow ones."""

    def __init__(
        self, max_concurrent_calls: int, max_streams: int, metrics: Metrics | None = None
    ) -> None:
        self.calls = _Gate(max_concurrent_calls, "calls")
        self.streams = _Gate(max_streams, "streams")
        self.metrics = metrics or Metrics()
        # The labelled metric children of each (method, code): what
        # ``Metrics.observe_call`` looks up on every call, looked up once.
        self._observers: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._sheds_unlogged = 0
        self._shed_logged_at = 0.0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(EXEMPT_PREFIXES):
            return handler
        method = details.method

        def wrap(
            behavior: Callable[..., Any], streaming_requests: bool, writes: bool
        ) -> Callable[..., Any]:
            return self.wrap(handler, method, behavior, streaming_requests, writes)

        return rewrap(handler, wrap, tolerant(handler.request_deserializer))

    def wrap(
        self,
        handler: grpc.RpcMethodHandler,
        method: str,
        behavior: Callable[..., Any],
        streaming_requests: bool,
        writes: bool,
    ) -> Callable[..., Any]:
        """``behavior`` of ``handler`` behind the gates, the tolerant parse and the call log.

        The handler's request deserializer must be wrapped with :func:`tolerant`
        (``intercept_service`` does it; so does an interceptor that wraps both
        its own behaviour and this one in one pass, ``auth.AuthInterceptor``).
        """
        # A client-streaming call holds a stream slot, a unary one a call slot.
        if handler.unary_unary is not None or handler.stream_unary is not None:
            gate = self.streams if streaming_requests else self.calls
            return self._wrap_unary(behavior, method, gate, streaming_requests)
        return self._wrap_stream(behavior, method, streaming_requests, writes)

    def _log(
        self, method: str, code: str, started: float, context: aio.ServicerContext | None
    ) -> None:
        """Count a finished call and log it if it failed or was slow.

        Called before the call's handler returns (the context is still live),
        or with ``context`` None when nothing of the call may be read any more.
        """
        # Every call is counted in the metrics; the log keeps failures and slow calls
        # (a line per successful call costs a sixth of a busy server's time).
        seconds = time.monotonic() - started
        observers = self._observers.get((method, code))
        if observers is None:
            metrics = self.metrics
            observers = (metrics.calls.labels(method, code), metrics.latency.labels(method))
            self._observers[(method, code)] = observers
        observers[0].inc()
        observers[1].observe(seconds)
        slow = seconds >= SLOW_CALL_SECONDS
        level = logging.INFO if code != "OK" or slow else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "call",
                extra={
                    "method": method,
                    "code": code,
                    "ms": round(seconds * 1000, 2),
                    "peer": "" if context is None else peer(context),
                },
            )

    async def _refuse(self, method: str, context: aio.ServicerContext, gate: _Gate) -> None:
        self.metrics.shed.labels(method, gate.kind).inc()
        self.metrics.observe_call(method, "RESOURCE_EXHAUSTED", 0.0)
        self._sheds_unlogged += 1
        now = time.monotonic()
        if now - self._shed_logged_at >= SHED_LOG_SECONDS:
            log.warning(
                "load shed",
                extra={
                    "method": method,
                    "gate": gate.kind,
                    "active": gate.active,
                    "limit": gate.limit,
                    "shed_since_last_line": self._sheds_unlogged,
                },
            )
            self._shed_logged_at = now
            self._sheds_unlogged = 0
        await abort_with(
            context,
            ResourceExhausted(
                f"server busy: more than {gate.limit} {gate.kind} in flight; retry with backoff",
                reason=SHED_REASON,
            ),
        )

    def _wrap_unary(
        self, behavior: Callable[..., Any], method: str, gate: _Gate, streaming_requests: bool
    ) -> Callable[..., Any]:
        # The peer is read only for a call that is logged, in ``_log``, before
        # the handler returns: the call is live until then.
        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            started = time.monotonic()
            if not gate.enter():
                await self._refuse(method, context, gate)
            code = "OK"
            try:
                if streaming_requests:
                    request = await parsed(request, context, True)
                elif type(request) is _Malformed:
                    await abort_with(context, _malformed())
                return await behavior(request, context)
            except BaseException as exc:
                code = outcome(exc, context)
                raise
            finally:
                gate.leave()
                self._log(method, code, started, context)

        return unary

    def _wrap_stream(
        self, behavior: Callable[..., Any], method: str, streaming_requests: bool, writes: bool
    ) -> Callable[..., Any]:
        gate = self.streams

        # A coroutine, not a generator: gRPC awaits it inside the call, so
        # everything below, the handler's clean-up included, runs while the
        # call is live (a generator handler abandoned by its client would be
        # closed later, by the garbage collector, after the call was freed).
        async def stream(request: Any, context: aio.ServicerContext) -> None:
            started = time.monotonic()
            if not gate.enter():
                await self._refuse(method, context, gate)
            code = "OK"
            try:
                request = await parsed(request, context, streaming_requests)
                if writes:
                    await write_all(behavior(request, context), context)
                else:  # the handler writes its answers itself
                    await behavior(request, context)
            except BaseException as exc:
                code = outcome(exc, context)
                raise
            finally:
                gate.leave()
                self._log(method, code, started, context)

        return stream
