"""The one place where errors become gRPC statuses.

An :class:`~idlink.errors.IdlinkError` keeps its canonical code and
message; its reason and field travel in the trailing metadata
(``idlink-error-reason``, ``idlink-error-field``, ``idlink-error-domain``) so
that clients can act on them without parsing text. Anything else is a bug:
it is logged here with its traceback and the caller gets ``INTERNAL`` with no
internals in the message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc import aio

from idlink.errors import IdlinkError

log = logging.getLogger("idlink.service")

T = TypeVar("T")

ERROR_DOMAIN = "idlink.v1"
REASON_KEY = "idlink-error-reason"
FIELD_KEY = "idlink-error-field"
DOMAIN_KEY = "idlink-error-domain"
INCIDENT_KEY = "idlink-incident-id"
MAX_MESSAGE_CHARS = 1024

_CODES: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def status_code(error: IdlinkError) -> grpc.StatusCode:
    """The gRPC code of a domain error (INTERNAL for a code gRPC does not know)."""
    return _CODES.get(error.code, grpc.StatusCode.INTERNAL)


def error_metadata(error: IdlinkError) -> tuple[tuple[str, str], ...]:
    metadata = [(DOMAIN_KEY, ERROR_DOMAIN), (REASON_KEY, error.reason)]
    if error.field:
        metadata.append((FIELD_KEY, error.field))
    return tuple(metadata)


def _message(error: IdlinkError) -> str:
    text = error.message or error.reason
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


async def abort_with(context: aio.ServicerContext, error: IdlinkError) -> NoReturn:
    """End the call with the status of a domain error."""
    context.set_trailing_metadata(error_metadata(error))
    await context.abort(status_code(error), _message(error))
    raise AssertionError("unreachable")  # abort raises


async def abort_internal(context: aio.ServicerContext, method: str, exc: BaseException) -> NoReturn:
    """Log an unexpected error with an incident id and end the call with INTERNAL."""
    incident = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error",
        extra={"method": method, "incident": incident, "error": type(exc).__name__},
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    context.set_trailing_metadata(((INCIDENT_KEY, incident),))
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
    raise AssertionError("unreachable")


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises this; it must pass through untouched.
    return isinstance(exc, aio.AbortError)


def guard_unary(
    method: str,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Map errors of a unary (or client-streaming) handler to statuses."""

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def handler(self: Any, request: Any, context: aio.ServicerContext) -> T:
            try:
                return await fn(self, request, context)
            except IdlinkError as exc:
                await abort_with(context, exc)
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await abort_internal(context, method, exc)

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def guard_stream(
    method: str,
) -> Callable[[Callable[..., AsyncIterator[T]]], Callable[..., AsyncIterator[T]]]:
    """Map errors of a server-streaming (or bidi) handler to statuses."""

    def wrap(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
        async def handler(
            self: Any, request: Any, context: aio.ServicerContext
        ) -> AsyncIterator[T]:
            responses = fn(self, request, context)
            try:
                async for item in responses:
                    yield item
            except IdlinkError as exc:
                await abort_with(context, exc)
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await abort_internal(context, method, exc)
            finally:
                # Close the handler now, while its call is live: left to the
                # garbage collector, its clean-up would run after the call
                # ended, when the call must no longer be touched.
                await responses.aclose()  # type: ignore[attr-defined]

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap
