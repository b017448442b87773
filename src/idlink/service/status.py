"""The one place where errors become gRPC statuses.

Every error a client sees is a standard ``google.rpc.Status`` (AIP-193), sent
in the ``grpc-status-details-bin`` trailer, so ``rpc_status.from_call`` reads it
in any gRPC client:

- its code and message are the error's canonical code and message;
- an ``ErrorInfo`` carries the ``UPPER_SNAKE`` reason (docs/api.md lists them),
  the domain ``idlink.v1``, and in its metadata the ``field`` at fault or the
  ``incident`` id of an internal error;
- a ``BadRequest`` with one field violation names the request field at fault.

The same reason and field also travel as plain trailing metadata
(``idlink-error-reason``, ``idlink-error-field``, ``idlink-error-domain``,
``idlink-incident-id``): the HTTP gateway, the load test and clients written
against earlier releases read them. They say nothing the status does not.

An :class:`~idlink.errors.IdlinkError` keeps its code, reason and field.
Anything else is a bug: it is logged here with its traceback and the caller
gets ``INTERNAL`` with no internals in the message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from idlink.errors import IdlinkError

log = logging.getLogger("idlink.service")

T = TypeVar("T")

ERROR_DOMAIN = "idlink.v1"
REASON_KEY = "idlink-error-reason"
FIELD_KEY = "idlink-error-field"
DOMAIN_KEY = "idlink-error-domain"
INCIDENT_KEY = "idlink-incident-id"
MAX_MESSAGE_CHARS = 1024
INTERNAL_REASON = "INTERNAL"

_CODES: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}

Metadata = tuple[tuple[str, str | bytes], ...]


def status_code(error: IdlinkError) -> grpc.StatusCode:
    """The gRPC code of a domain error (INTERNAL for a code gRPC does not know)."""
    return _CODES.get(error.code, grpc.StatusCode.INTERNAL)


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    *,
    field: str | None = None,
    incident: str | None = None,
) -> status_pb2.Status:
    """The ``google.rpc.Status`` of an error: ErrorInfo always, BadRequest when a field is named."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    if field:
        info.metadata["field"] = field
    if incident:
        info.metadata["incident"] = incident
    details = [_packed(info)]
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=message, reason=reason
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def _message(error: IdlinkError) -> str:
    text = error.message or error.reason
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def error_metadata(error: IdlinkError) -> Metadata:
    """The trailing metadata of a domain error: the rich status, then the plain keys."""
    status = rpc_status.to_status(
        rich_status(status_code(error), _message(error), error.reason, field=error.field)
    )
    plain: list[tuple[str, str | bytes]] = [(DOMAIN_KEY, ERROR_DOMAIN), (REASON_KEY, error.reason)]
    if error.field:
        plain.append((FIELD_KEY, error.field))
    return (*status.trailing_metadata, *plain)


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
    message = f"internal error (incident {incident})"
    status = rpc_status.to_status(
        rich_status(grpc.StatusCode.INTERNAL, message, INTERNAL_REASON, incident=incident)
    )
    context.set_trailing_metadata((*status.trailing_metadata, (INCIDENT_KEY, incident)))
    await context.abort(grpc.StatusCode.INTERNAL, message)
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
