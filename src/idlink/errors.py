"""The one exception root of idlink.

Each error carries a transport-neutral ``code`` (the name of the canonical
status it maps to) and an ``UPPER_SNAKE`` ``reason``; ``service/status.py`` is
the one place that turns them into gRPC statuses.
"""

from __future__ import annotations


class IdlinkError(Exception):
    """Root of every error idlink raises on purpose."""

    code = "INTERNAL"
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.field = field


class InvalidArgument(IdlinkError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"


class NotFound(IdlinkError):
    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(IdlinkError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class FailedPrecondition(IdlinkError):
    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class PermissionDenied(IdlinkError):
    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class Unauthenticated(IdlinkError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class ResourceExhausted(IdlinkError):
    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(IdlinkError):
    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class StoreError(IdlinkError):
    """The store failed; the writer is stopped and the store must be reopened."""

    code = "UNAVAILABLE"
    reason = "STORE_FAILED"


class StoreFull(ResourceExhausted):
    reason = "STORE_FULL"


class StoreFormatError(FailedPrecondition):
    reason = "STORE_FORMAT"
