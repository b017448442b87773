"""People sign in: the gateway's own routes for sessions and interactive keys (docs/console.md).

- ``POST /v1/sessions`` with ``Authorization: Bearer <key>`` and
  ``{"account": ..., "code": "123456"}``: who the key is (key id, account,
  role). For an interactive key the TOTP code is required and the answer
  holds a session id (``X-Idlink-Session``) that lives ``SESSION_SECONDS``.
- ``POST /v1/sessions:signOut`` ends the session sent beside the key.
- ``POST /v1/accounts/{account}/apiKeys/{key_id}:setInteractive`` (admins):
  ``{"interactive": true}`` makes a key interactive and answers its
  enrolment, the ``otpauth://`` URI and its QR code as SVG, once;
  ``false`` makes it a program's key again. Either ends its sessions.

Attempts are rate-limited twice: per client address in memory
(``ADDRESS_ATTEMPTS`` failures a minute, known key or not) and per key in the store
(``LOCK_AFTER_FAILURES`` failures in a row lock the key's sign-in for
``LOCK_SECONDS``, in every process). Every attempt on a known key is audited
(``/console/SignIn``, outcome OK, UNAUTHENTICATED or RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections import deque
from typing import Any

from aiohttp import web
from google.rpc import code_pb2

from idlink.errors import IdlinkError
from idlink.security import apikeys, totp
from idlink.security.audit import PendingEvent
from idlink.security.roles import ADMIN, ROLE_NAMES
from idlink.service.http.errors import gateway_error

# The console session a browser sends on every call (docs/console.md).
SESSION_HEADER = "X-Idlink-Session"

log = logging.getLogger("idlink.http.console")

SESSION_SECONDS = 30 * 60
LOCK_AFTER_FAILURES = 5
LOCK_SECONDS = 5 * 60
ADDRESS_ATTEMPTS = 20
ADDRESS_WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000
SIGN_IN = "/console/SignIn"
SIGN_OUT = "/console/SignOut"
SET_INTERACTIVE = "/console/SetKeyInteractive"

_SET_INTERACTIVE_PATH = re.compile(
    r"/v1/accounts/(?P<account>[^/]+)/apiKeys/(?P<key_id>[^/:]+):setInteractive"
)
_CODES = {name: number for name, number in code_pb2.Code.items()}


def _now_us() -> int:
    return time.time_ns() // 1000


def _rfc3339(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat().replace("+00:00", "Z")


def _refused(code: str, message: str, reason: str, *, retry_after: int = 0) -> web.Response:
    response = gateway_error(_CODES[code], message, reason=reason)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


class _AddressLimiter:
    """At most ``limit`` failed attempts per client address in a sliding window (in memory)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def blocked(self, address: str) -> bool:
        times = self._seen.get(address)
        if not times:
            return False
        now = time.monotonic()
        while times and now - times[0] > self.window:
            times.popleft()
        return len(times) >= self.limit

    def failed(self, address: str) -> None:
        if len(self._seen) > MAX_ADDRESSES:
            self._seen.clear()
        self._seen.setdefault(address, deque()).append(time.monotonic())


class ConsoleAuth:
    """Sign-in, sign-out and interactive keys, through the engine's key doors and the audit log.

    ``engine`` is the server's ``IdentityEngine``: keys are read with
    ``read_keys()`` and written with ``write_keys(fn)``; nothing here opens a
    store transaction itself.
    """

    def __init__(self, engine: Any, audit: Any) -> None:
        self.engine = engine
        self.audit = audit
        self.addresses = _AddressLimiter(ADDRESS_ATTEMPTS, ADDRESS_WINDOW_SECONDS)

    def routes(self) -> list[tuple[str, re.Pattern[str], Any]]:
        return [
            ("POST", re.compile(r"/v1/sessions"), self.sign_in),
            ("POST", re.compile(r"/v1/sessions:signOut"), self.sign_out),
            ("POST", _SET_INTERACTIVE_PATH, self.set_interactive),
        ]

    # -- helpers -------------------------------------------------------------------------

    async def _write(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.engine.write_keys, fn)

    def _audit(self, state: Any, method: str, outcome: str, detail: str = "") -> None:
        if self.audit is None:
            return
        self.audit.append(
            PendingEvent(
                state.account,
                state.key_id,
                ROLE_NAMES.get(state.role, ""),
                method,
                [],
                outcome,
                detail,
            )
        )

    @staticmethod
    def _bearer(request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any] | web.Response:
        if not request.can_read_body:
            return {}
        if request.content_type != "application/json":
            response = _refused(
                "INVALID_ARGUMENT", "send the body as application/json", "UNSUPPORTED_MEDIA_TYPE"
            )
            response.set_status(415)
            return response
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError:
            return _refused("INVALID_ARGUMENT", "the body is not JSON", "MALFORMED_REQUEST")
        if not isinstance(data, dict):
            return _refused("INVALID_ARGUMENT", "the body must be an object", "MALFORMED_REQUEST")
        return data

    def unauthenticated_hint(self, token: str) -> str:
        """Why a token was refused, when it is an interactive key without a live session."""
        key_token, session = apikeys.split_token(token)
        with self.engine.read_keys() as txn:
            found = apikeys.lookup_key(txn, key_token)
        if found is None or not found[1].interactive:
            return ""
        if not session:
            return (
                "this API key is interactive: sign in with a TOTP code (POST /v1/sessions) "
                "and send the session as X-Idlink-Session"
            )
        return "the session has ended: sign in again with a TOTP code"

    # -- routes ----------------------------------------------------------------------------

    async def sign_in(self, request: web.Request, _variables: dict[str, str]) -> web.StreamResponse:
        address = request.remote or ""
        if self.addresses.blocked(address):
            log.warning("sign-in rate limited", extra={"peer": address})
            return _refused(
                "RESOURCE_EXHAUSTED",
                "too many failed sign-ins from this address; wait a minute",
                "SIGN_IN_RATE_LIMITED",
                retry_after=int(ADDRESS_WINDOW_SECONDS),
            )
        response = await self._sign_in(request, address)
        if response.status != 200:
            self.addresses.failed(address)
        return response

    async def _sign_in(self, request: web.Request, address: str) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        token = self._bearer(request)
        account = str(body.get("account", ""))
        code = str(body.get("code", ""))
        if not token:
            return _refused(
                "UNAUTHENTICATED",
                "send the API key as 'Authorization: Bearer <key>'",
                "API_KEY_MISSING",
            )
        key_token, _ = apikeys.split_token(token)
        now = _now_us()

        def attempt(txn: Any) -> tuple[str, Any, str]:
            found = apikeys.lookup_key(txn, key_token)
            if found is None:
                return "UNKNOWN_KEY", None, ""
            hashed, state = found
            if account and state.account != account:
                return "OTHER_ACCOUNT", state, ""
            if not state.interactive:
                return "OK", state, ""
            if state.sign_in_locked_until_us > now:
                return "LOCKED", state, ""
            if not code:
                return "CODE_REQUIRED", state, ""
            step = totp.verify(apikeys.open_secret(txn, state), code, state.totp_last_step)
            if step is None:
                state.failed_sign_ins += 1
                if state.failed_sign_ins >= LOCK_AFTER_FAILURES:
                    state.sign_in_locked_until_us = now + LOCK_SECONDS * 10**6
                    state.failed_sign_ins = 0
                    txn.put_api_key(hashed, state)
                    return "LOCKED_NOW", state, ""
                txn.put_api_key(hashed, state)
                return "BAD_CODE", state, ""
            state.totp_last_step = step
            state.failed_sign_ins = 0
            state.sign_in_locked_until_us = 0
            session = apikeys.add_session(state, now, SESSION_SECONDS)
            txn.put_api_key(hashed, state)
            return "OK", state, session

        try:
            verdict, state, session = await self._write(attempt)
        except IdlinkError as exc:
            return _refused("UNAVAILABLE", exc.message, exc.reason or "UNAVAILABLE")
        if verdict == "UNKNOWN_KEY":
            log.info("sign-in refused", extra={"peer": address, "reason": "unknown key"})
            return _refused("UNAUTHENTICATED", "unknown or revoked API key", "API_KEY_UNKNOWN")
        if verdict == "OTHER_ACCOUNT":
            self._audit(state, SIGN_IN, "PERMISSION_DENIED", "another account")
            return _refused(
                "PERMISSION_DENIED", "this API key is not for the account named", "OTHER_ACCOUNT"
            )
        if verdict in ("LOCKED", "LOCKED_NOW"):
            self._audit(state, SIGN_IN, "RESOURCE_EXHAUSTED", "sign-in locked")
            wait = max(1, (state.sign_in_locked_until_us - now) // 10**6)
            return _refused(
                "RESOURCE_EXHAUSTED",
                f"too many wrong codes: sign-in is locked for {wait} s",
                "SIGN_IN_LOCKED",
                retry_after=int(wait),
            )
        if verdict == "CODE_REQUIRED":
            self._audit(state, SIGN_IN, "UNAUTHENTICATED", "no code")
            return _refused(
                "UNAUTHENTICATED",
                "this API key is interactive: give its TOTP code",
                "TOTP_REQUIRED",
            )
        if verdict == "BAD_CODE":
            self._audit(state, SIGN_IN, "UNAUTHENTICATED", "wrong code")
            return _refused("UNAUTHENTICATED", "wrong or used TOTP code", "TOTP_INVALID")
        self._audit(state, SIGN_IN, "OK", "session" if session else "")
        answer: dict[str, Any] = {
            "keyId": state.key_id,
            "account": state.account,
            "role": ROLE_NAMES.get(state.role, ""),
            "interactive": bool(state.interactive),
        }
        if session:
            answer["sessionId"] = session
            answer["expireTime"] = _rfc3339(now + SESSION_SECONDS * 10**6)
        return web.json_response(answer)

    async def sign_out(
        self, request: web.Request, _variables: dict[str, str]
    ) -> web.StreamResponse:
        key_token, _ = apikeys.split_token(self._bearer(request))
        session = request.headers.get(SESSION_HEADER, "").strip()

        def end(txn: Any) -> Any:
            found = apikeys.lookup_key(txn, key_token)
            if found is None or not session:
                return None
            hashed, state = found
            if apikeys.end_session(state, session):
                txn.put_api_key(hashed, state)
                return state
            return None

        state = await self._write(end)
        if state is None:
            return _refused("UNAUTHENTICATED", "no such session", "NO_SESSION")
        self._audit(state, SIGN_OUT, "OK")
        return web.json_response({})

    async def set_interactive(
        self, request: web.Request, variables: dict[str, str]
    ) -> web.StreamResponse:
        from urllib.parse import unquote

        account = unquote(variables["account"])
        key_id = unquote(variables["key_id"])
        token = self._bearer(request)
        session = request.headers.get(SESSION_HEADER, "").strip()
        if session:
            token = f"{token}{apikeys.SESSION_SEPARATOR}{session}"
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        interactive = body.get("interactive", True)
        if not isinstance(interactive, bool):
            return _refused(
                "INVALID_ARGUMENT", "interactive must be true or false", "MALFORMED_REQUEST"
            )
        # The same admission rules as AdminService: a live key of the account, role admin.
        with self.engine.read_keys() as txn:
            caller = apikeys.lookup(txn, token) if token else None
        if caller is None:
            return _refused("UNAUTHENTICATED", "unknown or revoked API key", "API_KEY_UNKNOWN")
        if caller.account != account:
            self._audit(caller, SET_INTERACTIVE, "PERMISSION_DENIED", "another account")
            return _refused(
                "PERMISSION_DENIED", "this API key is not for the account named", "OTHER_ACCOUNT"
            )
        if caller.role < ADMIN:
            self._audit(caller, SET_INTERACTIVE, "PERMISSION_DENIED")
            return _refused(
                "PERMISSION_DENIED",
                f"role {ROLE_NAMES.get(caller.role, '')} may not make keys interactive"
                " (needs admin)",
                "ROLE_NOT_ALLOWED",
            )
        try:
            state, secret = await self._write(
                lambda txn: apikeys.set_interactive(txn, account, key_id, interactive)
            )
        except IdlinkError as exc:
            return gateway_error(
                _CODES.get(exc.code, code_pb2.INTERNAL),
                exc.message,
                reason=exc.reason,
                field=exc.field or "",
            )
        self._audit(caller, SET_INTERACTIVE, "OK", f"{key_id} interactive={interactive}")
        answer: dict[str, Any] = {"keyId": state.key_id, "interactive": bool(state.interactive)}
        if secret:
            uri = totp.provisioning_uri(secret, account, state.key_id)
            answer["otpauthUri"] = uri
            answer["qrSvg"] = totp.qr_svg(uri)
        return web.json_response(answer)


def openapi_paths(status_ref: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI path items of these routes."""
    error = {
        "description": "An error: google.rpc.Status.",
        "content": {"application/json": {"schema": status_ref}},
    }

    def body(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "required": False,
            "content": {
                "application/json": {"schema": {"type": "object", "properties": properties}}
            },
        }

    def ok(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "description": "OK",
            "content": {
                "application/json": {"schema": {"type": "object", "properties": properties}}
            },
        }

    text = {"type": "string"}
    return {
        "/v1/sessions": {
            "post": {
                "operationId": "Console_SignIn",
                "tags": ["Console"],
                "summary": "Sign in: who the key is; a session for an interactive key (TOTP code).",
                "requestBody": body({"account": text, "code": text}),
                "responses": {
                    "200": ok(
                        {
                            "keyId": text,
                            "account": text,
                            "role": text,
                            "interactive": {"type": "boolean"},
                            "sessionId": text,
                            "expireTime": {"type": "string", "format": "date-time"},
                        }
                    ),
                    "default": error,
                },
            }
        },
        "/v1/sessions:signOut": {
            "post": {
                "operationId": "Console_SignOut",
                "tags": ["Console"],
                "summary": "End the session sent as X-Idlink-Session.",
                "responses": {"200": ok({}), "default": error},
            }
        },
        "/v1/accounts/{account}/apiKeys/{key_id}:setInteractive": {
            "post": {
                "operationId": "Console_SetKeyInteractive",
                "tags": ["Console"],
                "summary": "Make a key interactive (TOTP enrolment) or a program's key (admin).",
                "parameters": [
                    {"name": "account", "in": "path", "required": True, "schema": text},
                    {"name": "key_id", "in": "path", "required": True, "schema": text},
                ],
                "requestBody": body({"interactive": {"type": "boolean"}}),
                "responses": {
                    "200": ok(
                        {
                            "keyId": text,
                            "interactive": {"type": "boolean"},
                            "otpauthUri": text,
                            "qrSvg": text,
                        }
                    ),
                    "default": error,
                },
            }
        },
    }
