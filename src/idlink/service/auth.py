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
  customer data, with the reason; every customer an answer would reveal is
  counted before the answer is sent, and the answer that would take the key
  over its threshold is refused and flags the key;
- a customer PID that names an erased customer is ``NOT_FOUND`` / ``ERASED``;
- a key holds at most ``max_streams_per_key`` open streams and an account at
  most ``max_streams_per_account``, else ``RESOURCE_EXHAUSTED`` naming the quota.

The key is read from the store on every call (through the serving cache,
which checks every stored byte an admission read: docs/serving.md), so a
revocation made by any process is effective on the next call. An open stream does not outlive its
key: streaming requests re-check the key message by message, and every open
stream is re-checked every ``RECHECK_SECONDS``; a revoked key's streams end
``UNAUTHENTICATED``, a flagged key's reads of customer data
``RESOURCE_EXHAUSTED``.

The admitted caller is set in ``roles.CALLER`` in the handler's task (and
:func:`caller` gives it by the call's context) and the call is audited, a
stream answer by answer.

A streaming handler is run here as a writer (``context.write``), inside the
call: its generator is closed before the call ends, and the servicer context
is never touched after that (server.py, ``CallInterceptor``, says why).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from idlink.domain import access
from idlink.domain.engine import IdentityEngine
from idlink.domain.erasure import erased_error
from idlink.errors import (
    IdlinkError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from idlink.security import apikeys
from idlink.security.audit import AnomalyDetector, AuditLog, PendingEvent
from idlink.security.roles import (
    CALLER,
    CUSTOMER_FEEDS,
    CUSTOMER_READS,
    MINIMUM_ROLE,
    PII_CLEAR_ROLE,
    ROLE_NAMES,
    Principal,
)
from idlink.service import convert
from idlink.service.interceptors import (
    EXEMPT_PREFIXES,
    CallInterceptor,
    aborted_code,
    rewrap,
    tolerant,
)
from idlink.service.metrics import Metrics
from idlink.service.options import DEFAULT_MAX_STREAMS_PER_ACCOUNT, DEFAULT_MAX_STREAMS_PER_KEY
from idlink.service.status import abort_with

log = logging.getLogger("idlink.auth")

AUTHORIZATION = "authorization"
MAX_AUDITED_PIDS = 1000
# Every open stream's key is read again at least this often (SPEC 8: a revoked
# or flagged key's open streams end within a second).
RECHECK_SECONDS = 0.5
# Wrapped method handlers kept, by method and token (a session token makes one per session).
MAX_WRAPPED_HANDLERS = 4096

# The reasons of the refusals made here (docs/api.md, "Errors").
MISSING_KEY = "API_KEY_MISSING"
UNKNOWN_KEY = "API_KEY_UNKNOWN"
ROLE_TOO_LOW = "ROLE_NOT_ALLOWED"
OTHER_ACCOUNT = "OTHER_ACCOUNT"
REVOKED = "KEY_REVOKED"
THROTTLED = "KEY_THROTTLED"
KEY_QUOTA = "KEY_STREAM_QUOTA"
ACCOUNT_QUOTA = "ACCOUNT_STREAM_QUOTA"

# Refused, and ended when open, while the caller's key is flagged.
_REFUSED_WHEN_FLAGGED = CUSTOMER_READS | CUSTOMER_FEEDS

_PREFIX = "/idlink.v1."
# Reads that return no customer data: not audited one by one (denials still are).
QUIET_READS = frozenset(
    _PREFIX + name
    for name in (
        "ProfileService/GetSchema",
        "ProfileService/WatchChanges",
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
    """The customer PIDs a request or response names (audited, and counted for reads)."""
    out: list[bytes] = []
    fields = message.DESCRIPTOR.fields_by_name
    if "customer_pid" in fields and isinstance(message.customer_pid, str):
        _add_pid(out, message.customer_pid)
    if "customer" in fields and message.HasField("customer"):
        _add_pid(out, message.customer.customer_pid)
    if "suggestions" in fields:
        for suggestion in message.suggestions:
            _add_pid(out, suggestion.customer_pid)
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


@dataclass(eq=False, slots=True)
class _OpenStream:
    """A stream being served: whose, and why it must end (set by the re-check)."""

    token: str
    principal: Principal
    method: str
    task: asyncio.Task[Any] | None
    refusal: IdlinkError | None = None
    messages: int = 0


@dataclass(slots=True)
class _Streams:
    """The open streams of this process, by key and by account (for quotas and re-checks)."""

    open: set[_OpenStream] = field(default_factory=set)
    by_key: collections.Counter[str] = field(default_factory=collections.Counter)
    by_account: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, stream: _OpenStream) -> None:
        self.open.add(stream)
        self.by_key[stream.principal.key_id] += 1
        self.by_account[stream.principal.account] += 1

    def remove(self, stream: _OpenStream) -> None:
        if stream not in self.open:
            return
        self.open.discard(stream)
        for counter, name in (
            (self.by_key, stream.principal.key_id),
            (self.by_account, stream.principal.account),
        ):
            counter[name] -= 1
            if counter[name] <= 0:
                del counter[name]


# The admitted caller of each call being served, by its servicer context.
_CALLERS: dict[int, tuple[aio.ServicerContext, Principal]] = {}


def caller(context: aio.ServicerContext) -> Principal:
    """The admitted caller of the call whose context this is (LookupError if none was admitted).

    The same principal is in ``roles.CALLER`` in the handler's task.
    """
    entry = _CALLERS.get(id(context))
    if entry is not None and entry[0] is context:
        return entry[1]
    found = CALLER.get()
    if found is None:
        raise LookupError("no caller was admitted for this call")
    return found


@contextlib.contextmanager
def _admitted_caller(context: aio.ServicerContext, principal: Principal) -> Any:
    CALLER.set(principal)
    _CALLERS[id(context)] = (context, principal)
    try:
        yield
    finally:
        _CALLERS.pop(id(context), None)


class AuthInterceptor(aio.ServerInterceptor):
    """Authentication, authorisation, account scoping, throttling and audit of every call."""

    def __init__(
        self,
        engine: IdentityEngine,
        audit: AuditLog,
        detector: AnomalyDetector,
        *,
        max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY,
        max_streams_per_account: int = DEFAULT_MAX_STREAMS_PER_ACCOUNT,
        metrics: Metrics | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
        calls: CallInterceptor | None = None,
    ) -> None:
        # With ``calls``, this one interceptor also runs the call interceptor's
        # layer (load shedding, tolerant parse, call logs) outside its own.
        self.calls = calls
        self.engine = engine
        self.audit = audit
        self.detector = detector
        self.max_streams_per_key = max_streams_per_key
        self.max_streams_per_account = max_streams_per_account
        self.metrics = metrics
        self.recheck_seconds = recheck_seconds
        self.streams = _Streams()
        self._watcher: asyncio.Task[None] | None = None
        # The wrapped handler of each (method, token) seen, with the handler it wraps:
        # the wrapping depends on nothing else, so a call reuses it (bounded: cleared when full).
        self._wrapped: dict[tuple[str, str], tuple[Any, grpc.RpcMethodHandler]] = {}
        self._digests: dict[str, bytes] = {}

    # -- admission ------------------------------------------------------------------

    def admit(self, method: str, token: str, request: Any | None) -> _Admitted:
        """Check a call before it runs (raises the IdlinkError that refuses it)."""
        if not token:
            raise Unauthenticated(
                "missing API key: send metadata 'authorization: Bearer <token>'",
                reason=MISSING_KEY,
            )
        wanted = request is not None and method in _CUSTOMER_REQUESTS
        pids = customer_pids(request) if wanted else []
        found = self._admission(token, pids[0] if pids else None)
        if found is None:
            raise Unauthenticated("unknown or revoked API key", reason=UNKNOWN_KEY)
        state = found.key
        minimum = MINIMUM_ROLE.get(method)
        principal = Principal(state.key_id, state.account, state.role)
        if minimum is None or state.role < minimum:
            needed = ROLE_NAMES.get(minimum or 0, "a role no key has")
            self._audit_denied(principal, method, "PERMISSION_DENIED")
            raise PermissionDenied(
                f"role {principal.role_name} may not call {method.rsplit('/', 1)[-1]}"
                f" (needs {needed})",
                reason=ROLE_TOO_LOW,
            )
        if request is not None:
            self.check_account(principal, method, request)
        if method in _REFUSED_WHEN_FLAGGED:
            if state.flagged_at_us:
                self._audit_denied(principal, method, "RESOURCE_EXHAUSTED")
                raise self._throttled(state)
            self.detector.seen_unflagged(state.key_id)
        if found.erased:
            raise erased_error()
        if state.role < PII_CLEAR_ROLE:
            principal = Principal(state.key_id, state.account, state.role, found.pii_fields)
        max_customers, window = found.max_customers, found.window_seconds
        return _Admitted(principal, max_customers, window)

    def _admission(self, token: str, customer_pid: bytes | None) -> access.Admission | None:
        """``access.admission`` of the token, from the serving cache when it provably holds.

        A plain key's admission is a function of what the store holds (the key,
        the account's id, schema, policy and tombstones), so the cache, which
        checks every byte the admission read (docs/serving.md), serves it: a
        key revoked or flagged by any process is refused on the very next call.
        A session token's admission also depends on the clock (the session
        expires): it is read every time.
        """
        if apikeys.SESSION_SEPARATOR in token:
            return access.admission(
                self.engine, token, customer_pid=customer_pid, pii_below=PII_CLEAR_ROLE
            )

        def make() -> Callable[[Any], access.Admission | None]:
            def compute(txn: Any) -> access.Admission | None:
                return access.admission(
                    _InTxn(txn),  # type: ignore[arg-type]
                    token,
                    customer_pid=customer_pid,
                    pii_below=PII_CLEAR_ROLE,
                )

            return compute

        key = ("admission", self._token_hash(token), customer_pid)
        return self.engine.serving.answer(key, make)

    def _token_hash(self, token: str) -> bytes:
        """``apikeys.token_hash(token)``, worked out once per token (bounded: cleared when full)."""
        digest = self._digests.get(token)
        if digest is None:
            digest = apikeys.token_hash(token)
            if len(self._digests) >= MAX_WRAPPED_HANDLERS:
                self._digests.clear()
            self._digests[token] = digest
        return digest

    def _key_state(self, token: str) -> Any:
        """The live key of a token (None: unknown or revoked), as :meth:`_admission` reads it."""
        if apikeys.SESSION_SEPARATOR in token:
            return access.key_states(self.engine, [token])[token]

        def make() -> Callable[[Any], Any]:
            return lambda txn: access.key_states(_InTxn(txn), [token])[token]  # type: ignore[arg-type]

        return self.engine.serving.answer(("key", self._token_hash(token)), make)

    @staticmethod
    def _throttled(state: Any) -> IdlinkError:
        return ResourceExhausted(
            f"API key {state.key_id} is throttled by anomaly detection: "
            f"{state.flag_reason}; an admin must clear it (AdminService.ClearKeyFlag)",
            reason=THROTTLED,
        )

    def check_account(self, principal: Principal, method: str, request: Any) -> None:
        # An empty account names nobody's data: the handler refuses it as INVALID_ARGUMENT.
        account = request_account(request)
        if account and account != principal.account:
            self._audit_denied(principal, method, "PERMISSION_DENIED", "another account")
            raise PermissionDenied(
                "this API key is not for the account named", reason=OTHER_ACCOUNT
            )

    def recheck(self, token: str, method: str) -> IdlinkError | None:
        """Why a key admitted earlier may no longer go on (None: it may)."""
        return self._verdict(self._key_state(token), method)

    def _verdict(self, state: Any, method: str) -> IdlinkError | None:
        if state is None:
            return Unauthenticated("the API key was revoked", reason=REVOKED)
        if state.flagged_at_us and method in _REFUSED_WHEN_FLAGGED:
            return self._throttled(state)
        return None

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

    # -- what an answer reveals -----------------------------------------------------------

    def _count(
        self, admitted: _Admitted, method: str, asked: list[bytes], response: Any
    ) -> tuple[list[bytes], str, bool]:
        """The customers an answer names, and why it may not go (``reason``, ``crossed``).

        Counted before the answer is sent (SPEC 8): an empty reason lets it go.
        Otherwise the answer is refused; ``crossed`` is true for the answer that
        took the key over its threshold (:meth:`_refusal` then flags the key),
        and every later read of the key is refused until an admin clears it.
        ``asked`` are the customers the request names (counted too).
        """
        shown = convert.shown_pids(response)
        pids = list(shown) if shown is not None else customer_pids(response)
        if method not in CUSTOMER_READS:
            return pids, "", False
        reason, crossed = self.detector.reveal(
            admitted.principal.key_id,
            [*asked, *pids] if asked else pids,
            admitted.max_customers,
            admitted.window_seconds,
        )
        return pids, reason, crossed

    async def _refusal(self, admitted: _Admitted, reason: str, crossed: bool) -> IdlinkError:
        """The refusal of an answer :meth:`_count` stopped (flagging the key if it crossed)."""
        principal = admitted.principal
        if crossed:
            await asyncio.get_running_loop().run_in_executor(
                None,
                self.detector.flag,
                principal.account,
                principal.key_id,
                principal.role_name,
                reason,
            )
        return ResourceExhausted(
            f"API key {principal.key_id} is throttled by anomaly detection: {reason};"
            " an admin must clear it (AdminService.ClearKeyFlag)",
            reason=THROTTLED,
        )

    def _audit_call(
        self,
        principal: Principal,
        method: str,
        pids: list[bytes],
        outcome: str,
        detail: str = "",
    ) -> None:
        if method in QUIET_READS:
            return
        unique = list(dict.fromkeys(p for p in pids if p))
        if len(unique) > MAX_AUDITED_PIDS:
            detail = (f"{len(unique)} customers " + detail).strip()
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

    # -- open streams: quotas and re-checks ---------------------------------------------

    def _open_stream(self, token: str, principal: Principal, method: str) -> _OpenStream:
        """Count a new stream against its key's and account's quotas (raises the refusal)."""
        quotas = (
            (self.streams.by_key[principal.key_id], self.max_streams_per_key, "key_streams"),
            (
                self.streams.by_account[principal.account],
                self.max_streams_per_account,
                "account_streams",
            ),
        )
        for held, limit, gate in quotas:
            if held >= limit:
                if self.metrics is not None:
                    self.metrics.shed.labels(method, gate).inc()
                self._audit_denied(principal, method, "RESOURCE_EXHAUSTED", f"{gate} quota")
                if gate == "key_streams":
                    error = ResourceExhausted(
                        f"stream quota of API key {principal.key_id} reached: at most {limit}"
                        " open streams per key (--max-streams-per-key); end one first",
                        reason=KEY_QUOTA,
                    )
                else:
                    error = ResourceExhausted(
                        f"stream quota of account {principal.account} reached: at most {limit}"
                        " open streams per account (--max-streams-per-account); end one first",
                        reason=ACCOUNT_QUOTA,
                    )
                raise error
        stream = _OpenStream(token, principal, method, asyncio.current_task())
        self.streams.add(stream)
        return stream

    def start(self) -> None:
        """Start re-checking the keys of open streams (on the running event loop)."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_streams())

    async def stop(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_streams(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            try:
                self.recheck_streams()
            except Exception as exc:  # the store failed: its health shows it; try again
                log.error("stream key re-check failed", extra={"error": type(exc).__name__})

    def recheck_streams(self) -> int:
        """End the open streams whose key was revoked or flagged since they opened; how many."""
        live = [s for s in self.streams.open if s.refusal is None and s.task is not None]
        if not live:
            return 0
        ended = 0
        # One read transaction for all: a key lookup is a few microseconds.
        states = access.key_states(self.engine, {stream.token for stream in live})
        verdicts = {
            (stream.token, stream.method): self._verdict(states[stream.token], stream.method)
            for stream in live
        }
        for stream in live:
            refusal = verdicts[(stream.token, stream.method)]
            if refusal is None or stream not in self.streams.open or stream.task is None:
                continue
            stream.refusal = refusal
            # The stream's task is waiting (this runs on the same loop): it wakes
            # with CancelledError, which its wrapper turns into the refusal.
            stream.task.cancel()
            ended += 1
        return ended

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
        kept = self._wrapped.get((method, token))
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap_handler(handler, method, token)
        if len(self._wrapped) >= MAX_WRAPPED_HANDLERS:
            self._wrapped.clear()
        self._wrapped[(method, token)] = (handler, wrapped)
        return wrapped

    def _wrap_handler(
        self, handler: grpc.RpcMethodHandler, method: str, token: str
    ) -> grpc.RpcMethodHandler:
        """``handler`` behind admission and audit (and the call layer, when it is given)."""
        calls = self.calls

        def wrap(
            behavior: Callable[..., Any], streaming_in: bool, writes: bool
        ) -> Callable[..., Any]:
            wrapper = self._wrap_stream if writes else self._wrap
            admitted = wrapper(behavior, method, token, streaming_in)
            if calls is None:
                return admitted
            # The call interceptor's layer outside this one, as when it ran first
            # (what it wraps here is a coroutine function: it writes nothing itself).
            return calls.wrap(handler, method, admitted, streaming_in, False)

        if calls is None:
            return rewrap(handler, wrap)
        return rewrap(handler, wrap, tolerant(handler.request_deserializer))

    @staticmethod
    async def _abort(context: aio.ServicerContext, refused: IdlinkError) -> None:
        await abort_with(context, refused)

    def _checked_requests(self, stream: _OpenStream, requests: AsyncIterator[Any]) -> Any:
        principal, method = stream.principal, stream.method

        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                # The key is read again for every message: a revocation or a
                # flag made by any process stops the stream at the next one.
                refusal = stream.refusal or self.recheck(stream.token, method)
                if refusal is not None:
                    stream.refusal = refusal
                    raise refusal
                account = request_account(request)
                if account and account != principal.account:
                    self._audit_denied(principal, method, "PERMISSION_DENIED", "another account")
                    raise PermissionDenied("this API key is not for the account named")
                yield request

        return checked()

    def _wrap(
        self, behavior: Callable[..., Any], method: str, token: str, streaming_in: bool
    ) -> Callable[..., Any]:
        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            asked = None if streaming_in else request
            try:
                admitted = self.admit(method, token, asked)
            except IdlinkError as refused:
                await self._abort(context, refused)
                raise AssertionError("unreachable") from None
            principal = admitted.principal
            opened: _OpenStream | None = None
            if streaming_in:  # a client-streaming call holds a stream slot
                refused_or_opened = self._refuse_or_open(token, principal, method)
                if isinstance(refused_or_opened, IdlinkError):
                    await self._abort(context, refused_or_opened)
                opened = refused_or_opened
                request = self._checked_requests(refused_or_opened, request)
            pids = [] if asked is None else customer_pids(asked)
            outcome = "OK"
            try:
                CALLER.set(principal)
                _CALLERS[id(context)] = (context, principal)
                try:
                    response = await behavior(request, context)
                finally:
                    _CALLERS.pop(id(context), None)
                found, reason, crossed = self._count(admitted, method, pids, response)
                if reason:
                    refusal = await self._refusal(admitted, reason, crossed)
                    outcome = refusal.code
                    await self._abort(context, refusal)
                pids.extend(found)
                return response
            except aio.AbortError:
                if outcome == "OK":
                    outcome = aborted_code(context)
                raise
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except BaseException:
                outcome = "UNKNOWN"
                raise
            finally:
                if opened is not None:
                    self.streams.remove(opened)
                self._audit_call(principal, method, pids, outcome)

        return unary

    def _refuse_or_open(self, token: str, principal: Principal, method: str) -> Any:
        try:
            return self._open_stream(token, principal, method)
        except IdlinkError as refused:
            return refused

    def _wrap_stream(
        self, behavior: Callable[..., Any], method: str, token: str, streaming_in: bool
    ) -> Callable[..., Any]:
        # A coroutine that writes the answers itself: see the module docstring.
        async def stream(request: Any, context: aio.ServicerContext) -> None:
            asked = None if streaming_in else request
            try:
                admitted = self.admit(method, token, asked)
            except IdlinkError as refused:
                await self._abort(context, refused)
                raise AssertionError("unreachable") from None
            principal = admitted.principal
            opened = self._refuse_or_open(token, principal, method)
            if isinstance(opened, IdlinkError):
                await self._abort(context, opened)
            if streaming_in:
                request = self._checked_requests(opened, request)
            asked_pids = [] if asked is None else customer_pids(asked)
            outcome = "OK"
            refusal: IdlinkError | None = None
            responses: Any = None
            try:
                with _admitted_caller(context, principal):
                    responses = behavior(request, context)
                    async for item in responses:
                        found, reason, crossed = self._count(admitted, method, asked_pids, item)
                        if reason:
                            refusal = await self._refusal(admitted, reason, crossed)
                            break
                        await context.write(item)
                        opened.messages += 1
                        # Audited as it goes: an endless or killed stream leaves
                        # the answers it gave in the audit log.
                        self._audit_call(principal, method, found, "OK", _message_detail(item))
            except asyncio.CancelledError:
                if opened.refusal is None:
                    outcome = "CANCELLED"
                    raise
                # The re-check ended the stream: answer with its status instead.
                refusal = opened.refusal
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except aio.AbortError:
                outcome = aborted_code(context)
                raise
            except BaseException:
                outcome = "UNKNOWN"
                raise
            finally:
                # First, synchronously: the re-check never cancels a stream that is closing.
                self.streams.remove(opened)
                if refusal is not None:
                    outcome = refusal.code
                try:
                    if responses is not None:
                        await responses.aclose()
                finally:
                    if outcome != "OK" or not opened.messages:
                        detail = f"after {opened.messages} messages" if opened.messages else ""
                        pids = [] if asked is None else customer_pids(asked)
                        self._audit_call(principal, method, pids, outcome, detail)
            if refusal is not None:
                await self._abort(context, refusal)

        return stream


class _InTxn:
    """Stands for the engine in ``access``'s use cases: its key reads use the transaction given."""

    __slots__ = ("txn",)

    def __init__(self, txn: Any) -> None:
        self.txn = txn

    def read_keys(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(self.txn)


def _message_detail(message: Any) -> str:
    """What one answer of a stream is about, for its audit event (an ingest ack: its batch)."""
    if "committed_seq" in message.DESCRIPTOR.fields_by_name:
        return f"seq {message.committed_seq}: {message.records} records"
    return ""
