"""The one server interceptor that admits callers (SPEC 8).

For every RPC except health and reflection:

- ``authorization: Bearer <token>`` metadata names a live API key, else
  ``UNAUTHENTICATED``;
- the key's role is at least the RPC's minimum (``security/roles.py``), else
  ``PERMISSION_DENIED``;
- every request's ``account`` is the key's account, else ``PERMISSION_DENIED``
  (streams are checked message by message), so nothing of another account is
  ever read, not even whether it exists;
- a key flagged by anomaly detection gets ``RESOURCE_EXHAUSTED`` on reads of
  customer data, with the reason;
- a customer PID that names an erased customer is ``NOT_FOUND`` / ``ERASED``.

The key is read from the store on every call, so a revocation made by any
process is effective on the next call. The caller is put in a context
variable for masking (``service/convert.py``) and the call is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from idlink.domain import profiles
from idlink.domain.erasure import erased_error, is_erased
from idlink.domain.errors import IdlinkError, PermissionDenied
from idlink.security import apikeys
from idlink.security.audit import AnomalyDetector, AuditLog, PendingEvent, thresholds
from idlink.security.roles import (
    CALLER,
    CUSTOMER_READS,
    MINIMUM_ROLE,
    PII_CLEAR_ROLE,
    ROLE_NAMES,
    Principal,
)
from idlink.service.status import error_metadata
from idlink.store import codec

log = logging.getLogger("idlink.auth")

EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
AUTHORIZATION = "authorization"
MAX_AUDITED_PIDS = 1000

_PREFIX = "/idlink.v1."
# Reads that return no PII: not audited one by one (denials still are).
QUIET_READS = frozenset(
    _PREFIX + name
    for name in (
        "ProfileService/GetSchema",
        "ProfileService/WatchChanges",
        "IdentityService/ExplainLink",
        "IdentityService/GetCustomerHistory",
        "IdentityService/PreviewConfigChange",
        "AdminService/ListKeyTypes",
        "AdminService/GetAccountPolicy",
        "AdminService/GetSecurityPolicy",
        "AdminService/ListApiKeys",
        "AdminService/ListAuditEvents",
    )
)
# Methods whose request names a customer that may have been erased.
_CUSTOMER_REQUESTS = frozenset(
    _PREFIX + name
    for name in (
        "ProfileService/GetCustomer",
        "ProfileService/ListJourney",
        "IdentityService/GetCustomerHistory",
        "AdminService/ExportCustomer",
    )
)


class Refused(Exception):
    """A call that may not go on: its status and message."""

    def __init__(self, code: grpc.StatusCode, message: str, metadata: tuple[Any, ...] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.metadata = metadata


def bearer_token(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def request_account(request: Any) -> str:
    """The account a request names (UpdateSchema carries it inside the schema)."""
    account = getattr(request, "account", "")
    if not account and hasattr(request, "schema"):
        account = request.schema.account
    return str(account)


def customer_pids(message: Any) -> list[bytes]:
    """The customer PIDs a request or response names (for the audit)."""
    out: list[bytes] = []
    fields = message.DESCRIPTOR.fields_by_name
    if "customer_pid" in fields and isinstance(message.customer_pid, str):
        _add_pid(out, message.customer_pid)
    if "customer" in fields and message.HasField("customer"):
        _add_pid(out, message.customer.customer_pid)
    if "responses" in fields:
        for item in message.responses:
            out.extend(customer_pids(item))
    return out


def _add_pid(out: list[bytes], text: str) -> None:
    if text:
        with contextlib.suppress(ValueError):
            out.append(uuid.UUID(text).bytes)


@dataclass(slots=True)
class _Admitted:
    principal: Principal
    max_customers: int
    window_seconds: int


def _code_name(context: aio.ServicerContext) -> str:
    try:
        code = context.code()
    except Exception:
        return "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "UNKNOWN"


class AuthInterceptor(aio.ServerInterceptor):
    """Authentication, authorisation, account scoping, throttling and audit of every call."""

    def __init__(self, store: Any, audit: AuditLog, detector: AnomalyDetector) -> None:
        self.store = store
        self.audit = audit
        self.detector = detector

    # -- admission ------------------------------------------------------------------

    def admit(self, method: str, token: str, request: Any | None) -> _Admitted:
        """Check a call before it runs (raises Refused)."""
        if not token:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing API key: send metadata 'authorization: Bearer <token>'",
            )
        with self.store.read() as txn:
            state = apikeys.lookup(txn, token)
            if state is None:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
            minimum = MINIMUM_ROLE.get(method)
            principal = Principal(state.key_id, state.account, state.role)
            if minimum is None or state.role < minimum:
                needed = ROLE_NAMES.get(minimum or 0, "a role no key has")
                self._audit_denied(principal, method, "PERMISSION_DENIED")
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"role {principal.role_name} may not call {method.rsplit('/', 1)[-1]}"
                    f" (needs {needed})",
                )
            if request is not None:
                self.check_account(principal, method, request)
            account_id = txn.account_id(state.account)
            prefix = None if account_id is None else codec.account_prefix(account_id)
            if state.flagged_at_us and method in CUSTOMER_READS:
                self._audit_denied(principal, method, "RESOURCE_EXHAUSTED")
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"API key {state.key_id} is throttled by anomaly detection: "
                    f"{state.flag_reason}; an admin must clear it (AdminService.ClearKeyFlag)",
                )
            if request is not None and prefix is not None and method in _CUSTOMER_REQUESTS:
                pids = customer_pids(request)
                if pids and is_erased(txn, prefix, pids[0]):
                    error: IdlinkError = erased_error()
                    raise Refused(grpc.StatusCode.NOT_FOUND, error.message, error_metadata(error))
            if state.role < PII_CLEAR_ROLE and prefix is not None:
                schema = profiles.load_schema(txn, prefix)
                pii = frozenset(f.name for f in schema.ordered() if f.pii)
                principal = Principal(state.key_id, state.account, state.role, pii)
            max_customers, window = thresholds(txn, prefix)
        return _Admitted(principal, max_customers, window)

    def check_account(self, principal: Principal, method: str, request: Any) -> None:
        # An empty account names nobody's data: the handler refuses it as INVALID_ARGUMENT.
        account = request_account(request)
        if account and account != principal.account:
            self._audit_denied(principal, method, "PERMISSION_DENIED", "another account")
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED, "this API key is not for the account named"
            )

    def _audit_denied(
        self, principal: Principal, method: str, outcome: str, detail: str = ""
    ) -> None:
        self.audit.append(
            PendingEvent(
                principal.account,
                principal.key_id,
                principal.role_name,
                method,
                [],
                outcome,
                detail,
            )
        )

    # -- after the call -----------------------------------------------------------------

    async def _observe(self, admitted: _Admitted, method: str, pids: list[bytes]) -> None:
        if method not in CUSTOMER_READS or not pids:
            return
        principal = admitted.principal
        reason = self.detector.observe(
            principal.key_id, pids, admitted.max_customers, admitted.window_seconds
        )
        if reason:
            await asyncio.get_running_loop().run_in_executor(
                None,
                self.detector.flag,
                principal.account,
                principal.key_id,
                principal.role_name,
                reason,
            )

    def _audit_call(
        self, admitted: _Admitted, method: str, pids: list[bytes], outcome: str, count: int = 0
    ) -> None:
        if method in QUIET_READS:
            return
        principal = admitted.principal
        unique = list(dict.fromkeys(p for p in pids if p))
        detail = f"{len(unique)} customers" if len(unique) > MAX_AUDITED_PIDS else ""
        if count:
            detail = (detail + f" {count} messages").strip()
        self.audit.append(
            PendingEvent(
                principal.account,
                principal.key_id,
                principal.role_name,
                method,
                unique[:MAX_AUDITED_PIDS],
                outcome,
                detail,
            )
        )

    # -- wrapping the handlers --------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        token = bearer_token(details.invocation_metadata)
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
        )
        for name, make, streaming_in in kinds:
            behavior = getattr(handler, name)
            if behavior is not None:
                return make(
                    self._wrap(behavior, method, token, streaming_in),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    async def _admit_or_abort(
        self, method: str, token: str, request: Any, context: aio.ServicerContext
    ) -> _Admitted:
        try:
            return self.admit(method, token, request)
        except Refused as refused:
            if refused.metadata:
                context.set_trailing_metadata(refused.metadata)
            await context.abort(refused.code, refused.message)
            raise AssertionError("unreachable") from None

    def _checked_requests(
        self, principal: Principal, method: str, requests: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                account = request_account(request)
                if account and account != principal.account:
                    self._audit_denied(principal, method, "PERMISSION_DENIED", "another account")
                    raise PermissionDenied("this API key is not for the account named")
                yield request

        return checked()

    def _wrap(
        self, behavior: Callable[..., Any], method: str, token: str, streaming_in: bool
    ) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: aio.ServicerContext) -> Any:
                admitted = await self._admit_or_abort(
                    method, token, None if streaming_in else request, context
                )
                if streaming_in:
                    request = self._checked_requests(admitted.principal, method, request)
                CALLER.set(admitted.principal)
                pids: list[bytes] = []
                count = 0
                outcome = "OK"
                try:
                    async for item in behavior(request, context):
                        found = customer_pids(item)
                        if found:
                            pids.extend(found)
                            await self._observe(admitted, method, found)
                        count += 1
                        yield item
                except asyncio.CancelledError:
                    outcome = "CANCELLED"
                    raise
                except BaseException:
                    outcome = _code_name(context)
                    raise
                finally:
                    self._audit_call(admitted, method, pids, outcome, count)

            return stream

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            admitted = await self._admit_or_abort(
                method, token, None if streaming_in else request, context
            )
            if streaming_in:
                request = self._checked_requests(admitted.principal, method, request)
            CALLER.set(admitted.principal)
            pids = [] if streaming_in else customer_pids(request)
            outcome = "OK"
            try:
                response = await behavior(request, context)
                found = customer_pids(response)
                pids.extend(found)
                await self._observe(admitted, method, found)
                return response
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except BaseException:
                outcome = _code_name(context)
                raise
            finally:
                self._audit_call(admitted, method, pids, outcome)

        return unary
