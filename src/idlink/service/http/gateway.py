"""The HTTP/JSON gateway: every RPC over HTTP, by calling the same RPC of the same process.

A request is matched to a route (``routes.py``, from the protos'
``google.api.http`` annotations), turned into the RPC's request message
(proto3 JSON mapping) and called with the caller's ``Authorization`` header
as the ``authorization`` metadata: a unary RPC in process, through the
server's own interceptors (``local.py``), a streaming one over a private gRPC
channel (a Unix socket in a folder only this process's user can enter) to the
server's own gRPC port. Authentication, roles, masking, audit, anomaly
throttling, load shedding and errors are therefore exactly those of gRPC. A
failed call answers with the HTTP status of its ``google.rpc.Code`` and a
``google.rpc.Status`` body (``errors.py``).

Streams: ``WatchChanges`` is served as Server-Sent Events
(``Accept: text/event-stream``) or as newline-delimited JSON;
``StreamResolve`` and ``Ingest`` take NDJSON (one request per line) and
answer NDJSON (one response per line). An error after the first line of an
answer ends it with a line ``{"error": <google.rpc.Status>}`` (an SSE
``error`` event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2

from idlink.service.addresses import is_loopback, split_listen
from idlink.service.http import errors
from idlink.service.http.console_auth import SESSION_HEADER
from idlink.service.http.errors import error_response, gateway_error
from idlink.service.http.local import LocalCalls
from idlink.service.http.routes import (
    BIDI_STREAM,
    SERVER_STREAM,
    UNARY,
    Route,
    RouteError,
    build_request,
    load_routes,
    parse_message,
)

log = logging.getLogger("idlink.http")

MAX_BODY_BYTES = 16 << 20
UNARY_TIMEOUT_SECONDS = 60.0
# A stream whose first answer has not come by then is started (200) anyway: an
# idle change feed may send nothing for a long time. Refusals (authentication,
# role, account, bad request) come at once, so they still get their HTTP status.
FIRST_ANSWER_SECONDS = 1.0
SSE_KEEPALIVE_SECONDS = 15.0
STREAM_QUEUE = 16
ACTOR_HEADER = "Idlink-Actor"
JSON_TYPE = "application/json"
NDJSON_TYPE = "application/x-ndjson"
SSE_TYPE = "text/event-stream"

# No page of this origin may be framed, sniffed, or leak its address.
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# The console: scripts and styles from this origin only, never inline; calls
# only to this origin; nothing framed, no forms, no plugins.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONSOLE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def message_json(message: Any) -> bytes:
    """A message in the proto3 JSON mapping (lowerCamelCase names, defaults left out)."""
    return _dumps(json_format.MessageToDict(message))


def _ascii(value: str) -> bool:
    return value.isascii() and value.isprintable()


class Gateway:
    """Routes HTTP requests to the RPCs of the server at ``target`` (a private channel)."""

    def __init__(
        self,
        target: str,
        *,
        extra_routes: list[tuple[str, Any, Handler]] | None = None,
        unauthenticated_hint: Callable[[str], str] | None = None,
        local: LocalCalls | None = None,
    ):
        self.target = target
        self.local = local
        self.routes = load_routes()
        self.extra_routes = extra_routes or []
        self.unauthenticated_hint = unauthenticated_hint
        self.channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}
        self._console = self._load_console()
        self._openapi: bytes | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self.app.on_response_prepare.append(self._headers)

    # -- set-up --------------------------------------------------------------------------

    def open_channel(self) -> None:
        self.channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", MAX_BODY_BYTES),
                ("grpc.max_send_message_length", MAX_BODY_BYTES),
            ],
        )
        for route in self.routes:
            make = {
                UNARY: self.channel.unary_unary,
                SERVER_STREAM: self.channel.unary_stream,
                BIDI_STREAM: self.channel.stream_stream,
            }[route.kind]
            self._calls[route.name] = make(
                route.full_method,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )

    async def close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    @staticmethod
    def _load_console() -> dict[str, tuple[bytes, str]]:
        folder = resources.files("idlink.service.http") / "console"
        out: dict[str, tuple[bytes, str]] = {}
        for path, (name, content_type) in CONSOLE_FILES.items():
            try:
                out[path] = ((folder / name).read_bytes(), content_type)
            except FileNotFoundError:
                continue
        return out

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        for key, value in COMMON_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.path.startswith("/console"):
            response.headers["Content-Security-Policy"] = CONSOLE_CSP
        else:
            response.headers.setdefault("Cache-Control", "no-store")
            response.headers.setdefault(
                "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"
            )

    # -- dispatch ------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            # A bug: logged with an incident id; the caller gets INTERNAL and no internals.
            incident = uuid.uuid4().hex[:12]
            log.error(
                "unexpected error",
                extra={"path": request.path, "incident": incident, "error": type(exc).__name__},
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            return gateway_error(code_pb2.INTERNAL, f"internal error (incident {incident})")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path == "/openapi.json":
            return self._serve_openapi(request)
        if raw_path == "/console" or raw_path.startswith("/console/"):
            return self._serve_console(request, raw_path)
        allowed: set[str] = set()
        for verb, pattern, handler in self.extra_routes:
            found = pattern.fullmatch(raw_path)
            if found is None:
                continue
            if verb != request.method:
                allowed.add(verb)
                continue
            return await handler(request, found.groupdict())
        for route in self.routes:
            variables = route.match(raw_path)
            if variables is None:
                continue
            if route.verb != request.method:
                allowed.add(route.verb)
                continue
            return await self.call(route, request, variables)
        if allowed:
            response = gateway_error(
                code_pb2.UNIMPLEMENTED,
                f"{request.method} is not allowed here; use {', '.join(sorted(allowed))}",
                reason="METHOD_NOT_ALLOWED",
            )
            response.set_status(405)
            response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        return gateway_error(
            code_pb2.NOT_FOUND, f"no route for {raw_path} (see /openapi.json)", reason="NO_ROUTE"
        )

    def metadata(self, request: web.Request) -> list[tuple[str, str]] | web.Response:
        """The call's gRPC metadata from the HTTP headers (authorization, asserted actor)."""
        metadata: list[tuple[str, str]] = []
        authorization = request.headers.get("Authorization", "")
        session = request.headers.get(SESSION_HEADER, "").strip()
        if authorization:
            if not _ascii(authorization) or not _ascii(session):
                return gateway_error(
                    code_pb2.UNAUTHENTICATED,
                    "the Authorization header is malformed",
                    reason="MALFORMED_CREDENTIALS",
                )
            if session:
                # An interactive key's calls carry the session of its TOTP sign-in
                # (docs/console.md); the server checks the two together.
                scheme, _, token = authorization.partition(" ")
                authorization = f"{scheme} {token.strip()}.{session}"
            metadata.append(("authorization", authorization))
        actor = request.headers.get(ACTOR_HEADER, "")
        if actor and _ascii(actor):
            metadata.append(("idlink-actor", actor))
        return metadata

    async def call(
        self, route: Route, request: web.Request, variables: dict[str, str]
    ) -> web.StreamResponse:
        metadata = self.metadata(request)
        if isinstance(metadata, web.Response):
            return metadata
        if route.kind == BIDI_STREAM:
            return await self._bidi(route, request, variables, metadata)
        if route.body == "*" and request.can_read_body:
            content_type = request.content_type
            if content_type not in (JSON_TYPE, "application/octet-stream") and not (
                content_type.endswith("+json")
            ):
                # A cross-site form can post text/plain or form data, never JSON.
                response = gateway_error(
                    code_pb2.INVALID_ARGUMENT,
                    f"send the body as {JSON_TYPE}, not {content_type}",
                    reason="UNSUPPORTED_MEDIA_TYPE",
                )
                response.set_status(415)
                return response
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                response = gateway_error(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"the body is larger than {MAX_BODY_BYTES} bytes",
                    reason="BODY_TOO_LARGE",
                )
                response.set_status(413)
                return response
        else:
            body = b""
        try:
            message = build_request(route, variables, request.query.items(), body)
        except RouteError as exc:
            return gateway_error(
                code_pb2.INVALID_ARGUMENT, str(exc), reason="MALFORMED_REQUEST", field=exc.field
            )
        except json_format.ParseError as exc:
            return error_response(errors.parse_error_status(exc))
        if route.kind == SERVER_STREAM:
            return await self._server_stream(route, request, message, metadata)
        try:
            if self.local is not None and route.full_method in self.local:
                answer = await self.local.unary(
                    route.full_method,
                    message,
                    metadata=metadata,
                    timeout=UNARY_TIMEOUT_SECONDS,
                    peer=f"http:{request.remote or ''}",
                )
            else:
                answer = await self._calls[route.name](
                    message, metadata=metadata, timeout=UNARY_TIMEOUT_SECONDS, wait_for_ready=True
                )
        except grpc.aio.AioRpcError as exc:
            return error_response(self.rpc_status(exc, metadata))
        return web.Response(body=message_json(answer), content_type=JSON_TYPE)

    def rpc_status(self, exc: grpc.aio.AioRpcError, metadata: list[tuple[str, str]]) -> Any:
        """The Status of a failed call; a refused interactive key is told to sign in."""
        status = errors.status_of_rpc_error(exc)
        if status.code != code_pb2.UNAUTHENTICATED or self.unauthenticated_hint is None:
            return status
        token = next((v for k, v in metadata if k == "authorization"), "").partition(" ")[2]
        hint = self.unauthenticated_hint(token.strip()) if token else ""
        if not hint:
            return status
        return errors.build_status(code_pb2.UNAUTHENTICATED, hint, reason="SESSION_REQUIRED")

    # -- streams -------------------------------------------------------------------------

    async def _server_stream(
        self, route: Route, request: web.Request, message: Any, metadata: list[tuple[str, str]]
    ) -> web.StreamResponse:
        sse = SSE_TYPE in request.headers.get("Accept", "")
        if sse and "after_seq" in message.DESCRIPTOR.fields_by_name and not message.after_seq:
            # An EventSource that reconnects says where it stopped.
            last = request.headers.get("Last-Event-ID", "")
            if last.isdigit():
                message.after_seq = int(last)
        call = self._calls[route.name](message, metadata=metadata, wait_for_ready=True)
        return await self._relay(request, call, sse=sse, feeder=None, metadata=metadata)

    async def _bidi(
        self,
        route: Route,
        request: web.Request,
        variables: dict[str, str],
        metadata: list[tuple[str, str]],
    ) -> web.StreamResponse:
        call = self._calls[route.name](metadata=metadata, wait_for_ready=True)
        account = variables.get("account", "")
        numbered = "seq" in route.request_class.DESCRIPTOR.fields_by_name
        # One line in flight at a time: the next is sent when the previous one is
        # answered (StreamResolve) or acknowledged (Ingest). A gRPC client that
        # is still writing when the server ends the stream gets INTERNAL instead
        # of the server's status (grpc.aio replaces it when the write fails), so
        # this is what keeps every error of a stream exact.
        progress = asyncio.Event()
        call.add_done_callback(lambda _: progress.set())
        state: dict[str, Any] = {"answered": 0, "acked": 0}

        def note(message: Any) -> None:
            state["answered"] += 1
            state["acked"] = max(state["acked"], getattr(message, "committed_seq", 0))
            progress.set()

        async def answered(sent: int, seq: int) -> None:
            while not call.done() and not (
                state["acked"] >= seq if numbered else state["answered"] >= sent
            ):
                progress.clear()
                waiter = asyncio.ensure_future(progress.wait())
                try:
                    await asyncio.wait({waiter}, timeout=1.0)
                finally:
                    waiter.cancel()

        async def feed() -> None:
            number = 0
            last_seq = 0
            try:
                async for line in _lines(request):
                    number += 1
                    try:
                        item = parse_message(route.request_class, line)
                        if item.account and item.account != account:
                            raise RouteError("account differs from the path", "account")
                    except (RouteError, json_format.ParseError) as exc:
                        where = f"line {number}"
                        if isinstance(exc, RouteError):
                            field = f"{where}.{exc.field}" if exc.field else where
                            state["error"] = errors.build_status(
                                code_pb2.INVALID_ARGUMENT,
                                f"{where}: {exc}",
                                reason="MALFORMED_REQUEST",
                                field=field,
                            )
                        else:
                            state["error"] = errors.parse_error_status(exc, where)
                        break
                    item.account = account
                    if numbered:
                        # Batches without a seq are numbered on from the previous one.
                        if not item.seq:
                            item.seq = last_seq + 1
                        last_seq = item.seq
                    await call.write(item)
                    await answered(number, last_seq)
                await call.done_writing()
            except _LineTooLong as exc:
                state["error"] = errors.build_status(
                    code_pb2.RESOURCE_EXHAUSTED, str(exc), reason="LINE_TOO_LONG"
                )
                with contextlib.suppress(Exception):
                    await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call ended (its status is read from the call)
            except grpc.aio.UsageError:
                return

        feeder = asyncio.ensure_future(feed())
        try:
            return await self._relay(
                request,
                call,
                sse=False,
                feeder=feeder,
                state=state,
                metadata=metadata,
                on_message=note,
            )
        finally:
            if not feeder.done():
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feeder

    async def _relay(
        self,
        request: web.Request,
        call: Any,
        *,
        sse: bool,
        feeder: asyncio.Future[None] | None,
        state: dict[str, Any] | None = None,
        metadata: list[tuple[str, str]] | None = None,
        on_message: Callable[[Any], None] | None = None,
    ) -> web.StreamResponse:
        """Copy a call's answers to the HTTP response as they come (NDJSON or SSE)."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(STREAM_QUEUE)
        state = state if state is not None else {}

        async def pump() -> None:
            try:
                async for item in call:
                    if on_message is not None:
                        on_message(item)
                    await queue.put(("message", item))
                await queue.put(("end", None))
            except grpc.aio.AioRpcError as exc:
                await queue.put(("error", exc))

        reader = asyncio.ensure_future(pump())
        response: web.StreamResponse | None = None

        async def start() -> web.StreamResponse:
            started = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": SSE_TYPE if sse else NDJSON_TYPE,
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",
                },
            )
            await started.prepare(request)
            if sse:
                await started.write(b": stream started\n\n")
            return started

        try:
            while True:
                timeout = FIRST_ANSWER_SECONDS if response is None else SSE_KEEPALIVE_SECONDS
                try:
                    kind, item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    if response is None:
                        response = await start()
                    elif sse:
                        try:
                            await response.write(b": keep-alive\n\n")
                        except ConnectionResetError:
                            return response
                    continue
                if kind == "message":
                    if response is None:
                        response = await start()
                    try:
                        await response.write(self._frame(item, sse))
                    except ConnectionResetError:
                        return response  # the client went away: the call is cancelled below
                    continue
                status = None
                if feeder is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await feeder
                if state.get("error") is not None:
                    status = state["error"]
                elif kind == "error":
                    status = self.rpc_status(item, metadata or [])
                if status is None:
                    if response is None:
                        response = await start()
                    await response.write_eof()
                    return response
                if response is None:
                    return error_response(status)
                await response.write(self._error_frame(status, sse))
                await response.write_eof()
                return response
        finally:
            if not reader.done():
                call.cancel()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    @staticmethod
    def _frame(message: Any, sse: bool) -> bytes:
        data = message_json(message)
        if not sse:
            return data + b"\n"
        events = getattr(message, "events", None)
        last = f"id: {events[-1].seq}\n".encode() if events else b""
        return last + b"event: changes\ndata: " + data + b"\n\n"

    @staticmethod
    def _error_frame(status: Any, sse: bool) -> bytes:
        body = errors.status_bytes(status)
        if sse:
            return b"event: error\ndata: " + body + b"\n\n"
        return b'{"error":' + body + b"}\n"

    # -- documents -------------------------------------------------------------------------

    def _serve_openapi(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return gateway_error(code_pb2.UNIMPLEMENTED, "use GET", reason="METHOD_NOT_ALLOWED")
        if self._openapi is None:
            from idlink.service.http.openapi import openapi_bytes

            self._openapi = openapi_bytes()
        return web.Response(body=self._openapi, content_type=JSON_TYPE)

    def _serve_console(self, request: web.Request, raw_path: str) -> web.StreamResponse:
        if raw_path == "/console":
            raise web.HTTPMovedPermanently("/console/")
        name = raw_path[len("/console/") :]
        found = self._console.get(name)
        if found is None or request.method not in ("GET", "HEAD"):
            return gateway_error(code_pb2.NOT_FOUND, f"no console file {name!r}", reason="NO_ROUTE")
        body, content_type = found
        return web.Response(
            body=body, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )


class _LineTooLong(ValueError):
    pass


async def _lines(request: web.Request) -> Any:
    """The non-empty lines of a request body, each at most MAX_BODY_BYTES."""
    pending = bytearray()
    async for chunk in request.content.iter_any():
        searched = len(pending)  # only the new bytes can hold the next newline
        pending += chunk
        start = 0
        while True:
            end = pending.find(b"\n", max(start, searched))
            if end < 0:
                break
            line = bytes(pending[start:end])
            start = end + 1
            if line.strip():
                yield line
        del pending[:start]
        if len(pending) > MAX_BODY_BYTES:
            raise _LineTooLong(f"a line is longer than {MAX_BODY_BYTES} bytes")
    if bytes(pending).strip():
        yield bytes(pending)


# -- running beside the gRPC server ----------------------------------------------------------


def _ssl_context(
    tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None
) -> ssl.SSLContext | None:
    if not tls_cert and not tls_key:
        return None
    if not (tls_cert and tls_key):
        raise ValueError("TLS needs both a certificate and a key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls_cert, tls_key)
    if tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls_client_ca)
    return context


class HttpServer:
    """The gateway's HTTP listener and its private channel to the gRPC server."""

    def __init__(self, gateway: Gateway, socket_dir: str) -> None:
        self.gateway = gateway
        self.socket_dir = socket_dir
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._task: asyncio.Task[None] | None = None

    async def start(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        reuse_port: bool,
        grace: float,
    ) -> None:
        self.gateway.open_channel()
        self.runner = web.AppRunner(
            self.gateway.app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=grace,
        )
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None
        )
        await site.start()
        addresses = self.runner.addresses
        self.port = int(addresses[0][1]) if addresses else port

    async def close(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
        await self.gateway.close_channel()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def close_when(self, stop: asyncio.Event) -> None:
        """Stop serving HTTP when ``stop`` is set (or the server's task is cancelled)."""

        async def wait() -> None:
            try:
                await stop.wait()
            finally:
                await self.close()

        self._task = asyncio.ensure_future(wait())


async def start_http(
    server: grpc.aio.Server,
    listen: str,
    stop: asyncio.Event,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    reuse_port: bool = False,
    grace: float = 10.0,
    engine: Any = None,
    audit: Any = None,
    local: LocalCalls | None = None,
) -> HttpServer:
    """Serve the HTTP/JSON API and the console on ``listen`` until ``stop`` is set.

    Call it after the gRPC ports are added and before the gRPC server starts:
    it adds the private Unix socket the gateway calls through.
    """
    host, port = split_listen(listen, "--http-listen")
    ssl_context = _ssl_context(tls_cert, tls_key, tls_client_ca)
    if ssl_context is None and not is_loopback(host):
        raise ValueError(
            f"plaintext HTTP is only allowed on loopback; {host} needs a TLS certificate and key"
        )
    socket_dir = tempfile.mkdtemp(prefix="idlink-http-")  # mode 0700: only this user
    socket_path = os.path.join(socket_dir, "grpc.sock")
    if not server.add_insecure_port(f"unix:{socket_path}"):
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise OSError(f"cannot listen on the gateway's socket {socket_path}")
    extra: list[tuple[str, Any, Handler]] = []
    hint = None
    if engine is not None:
        from idlink.service.http.console_auth import ConsoleAuth

        console_auth = ConsoleAuth(engine, audit)
        extra, hint = console_auth.routes(), console_auth.unauthenticated_hint
    gateway = Gateway(
        f"unix:{socket_path}", extra_routes=extra, unauthenticated_hint=hint, local=local
    )
    http = HttpServer(gateway, socket_dir)
    try:
        await http.start(host, port, ssl_context, reuse_port, grace)
    except BaseException:
        await http.close()
        raise
    http.close_when(stop)
    log.info("http serving", extra={"listen": listen, "port": http.port, "tls": bool(ssl_context)})
    return http
