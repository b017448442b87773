"""Unary RPCs called in process: the gateway's calls through the server's own interceptors.

The HTTP gateway used to send every RPC over a private gRPC channel to its
own server; a unary call now goes straight to the method's handler, wrapped by
the same interceptors the gRPC server uses (load shedding and call logs, then
admission, masking, anomaly counting and audit), with a stand-in servicer
context. The request message is handed over as it is and the answer comes
back as a message: no serialisation, no HTTP/2 framing, no socket. A refusal
or a failure is the same ``google.rpc.Status`` a gRPC client would get,
raised as a ``grpc.aio.AioRpcError`` so the gateway treats both the same way.

Each call runs in a task of its own with a fresh ``contextvars`` context, as
a gRPC call does, and the task is awaited inside the HTTP request (cancelled
with it), so nothing of a call outlives it. Streaming RPCs still go over the
private channel (``gateway.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple

import grpc
from grpc import aio

from idlink.service import encoded

Metadata = Sequence[tuple[str, str | bytes]]


class _Details(NamedTuple):
    """The ``grpc.HandlerCallDetails`` of an in-process call."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class LocalContext:
    """What the interceptors and servicers use of a ``grpc.aio.ServicerContext``."""

    def __init__(self, metadata: Metadata, peer: str) -> None:
        self._metadata = tuple(metadata)
        self._peer = peer
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
    ) -> None:
        trailing = tuple(trailing_metadata)
        if trailing:
            self._trailing = trailing
        self._code, self._details = code, details
        raise aio.AbortError()

    def error(self) -> aio.AioRpcError:
        """The error a gRPC client would have seen for this aborted call."""
        return aio.AioRpcError(
            self._code or grpc.StatusCode.UNKNOWN,
            aio.Metadata(),
            aio.Metadata(*self._trailing),
            details=self._details,
        )


def _rpc_error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


class _Collector:
    """Stands for a server to the generated ``add_*Servicer_to_server``: keeps the handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers come by add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class LocalCalls:
    """The server's unary method handlers, each behind the server's interceptors."""

    def __init__(self, interceptors: Sequence[aio.ServerInterceptor]) -> None:
        self.interceptors = list(interceptors)
        self._collector = _Collector()

    def add(self, register: Callable[[Any, Any], None], servicer: Any) -> None:
        """Register ``servicer`` as ``register`` (a generated ``add_*_to_server``) would."""
        register(servicer, self._collector)

    def __contains__(self, method: str) -> bool:
        handler = self._collector.handlers.get(method)
        return handler is not None and handler.unary_unary is not None

    async def _intercepted(self, details: _Details) -> grpc.RpcMethodHandler | None:
        base = self._collector.handlers.get(details.method)

        async def innermost(_details: Any) -> grpc.RpcMethodHandler | None:
            return base

        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler | None]] = innermost
        for interceptor in reversed(self.interceptors):
            continuation = _bound(interceptor, continuation)
        return await continuation(details)

    async def unary(
        self, method: str, request: Any, *, metadata: Metadata, timeout: float, peer: str
    ) -> Any:
        """Call the unary ``method``: its answer, or raise the AioRpcError it failed with."""
        handler = await self._intercepted(_Details(method, tuple(metadata)))
        if handler is None or handler.unary_unary is None:
            raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED, f"no unary method {method}")
        context = LocalContext(metadata, peer)
        # A task of its own with a context of its own, as a gRPC call has.
        task = asyncio.get_running_loop().create_task(
            handler.unary_unary(request, context), context=contextvars.Context()
        )
        try:
            # The gateway writes the answer as JSON: it needs the message itself.
            return encoded.decoded(await asyncio.wait_for(task, timeout))
        except aio.AbortError:
            raise context.error() from None
        except TimeoutError:
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None


def _bound(
    interceptor: aio.ServerInterceptor,
    continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler | None]],
) -> Callable[[Any], Awaitable[grpc.RpcMethodHandler | None]]:
    async def intercepted(details: Any) -> grpc.RpcMethodHandler | None:
        return await interceptor.intercept_service(continuation, details)

    return intercepted
