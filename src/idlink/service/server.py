"""Build and run the idlink gRPC server (SPEC 9).

- The identity, profile and admin services, plus the standard health
  (``grpc.health.v1``) and reflection services.
- Writes and long engine calls run on a thread pool; short reads run inline
  (``service/runtime.py``).
- Load shedding: beyond ``max_concurrent_calls`` unary calls (or
  ``max_streams`` open streams) a call gets ``RESOURCE_EXHAUSTED`` at once,
  counted in the metrics; gRPC core's own queue of calls not yet picked up is
  made long enough that it never drops a call first. A key and an account each
  have a quota of open streams (``service/auth.py``).
- A servicer context is never touched after its call ended (``CallInterceptor``).
- Message size limits, plaintext only on loopback (TLS or mutual TLS otherwise).
- SIGTERM / SIGINT: health goes NOT_SERVING, change-feed streams end, calls in
  flight get ``grace`` seconds, the store is closed.
- One JSON object per log line.

``python -m idlink.service.server --data DIR --listen HOST:PORT`` runs it
without the ``idlink`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import inspect
import ipaddress
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from idlink.domain.engine import IdentityEngine
from idlink.domain.retention import apply_retention
from idlink.errors import IdlinkError, InvalidArgument, ResourceExhausted
from idlink.security.audit import AnomalyDetector, AuditLog
from idlink.security.secrets import load_master_secret
from idlink.service.admin import AdminServicer
from idlink.service.auth import AuthInterceptor
from idlink.service.identity import IdentityServicer
from idlink.service.metrics import Metrics
from idlink.service.options import (
    DEFAULT_DATA,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HEALTH_INTERVAL,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_ACCOUNT,
    DEFAULT_MAX_STREAMS_PER_KEY,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_RETENTION_INTERVAL,
    add_serve_arguments,
)
from idlink.service.profile import ProfileServicer
from idlink.service.runtime import ChangeNotifier, Runtime
from idlink.service.security_admin import Security
from idlink.service.status import error_metadata
from idlink.store.env import Store, server_lock
from idlink.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
)

log = logging.getLogger("idlink.server")

SLOW_CALL_SECONDS = 0.25
DEFAULT_THREADS = 32
MAX_MESSAGE_BYTES = 16 << 20

SERVICE_NAMES = (
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
_EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


# -- logging --------------------------------------------------------------------------

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO") -> None:
    """Log JSON lines to stderr (replacing the format of handlers already set up)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(level)


# -- load shedding and call logs ---------------------------------------------------------

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


def code_name(code: Any, default: str) -> str:
    """The name of a status code as ``ServicerContext.code()`` gives it (``default`` if unset)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return default


def _aborted_code(context: aio.ServicerContext) -> str:
    # Only ever called while the call is live (an abort was just raised in it);
    # code() reads what abort() recorded.
    try:
        return code_name(context.code(), "UNKNOWN")
    except Exception:  # older grpc: no code() on the servicer context
        return "UNKNOWN"


def _peer(context: aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # reporting only
        return ""


class CallInterceptor(aio.ServerInterceptor):
    """Sheds load beyond the limits, counts every call, logs failed and slow ones.

    The servicer context is touched only while its call is live: gRPC frees the
    call when the handler's task ends, and a finished call's context used later
    (a generator closed by the garbage collector, say) crashes the process. So
    the peer is read at the start, the outcome is taken from the exception that
    ended the handler, and a streaming handler is run here as a writer
    (``context.write``) that closes the handler's generator before returning.
    """

    def __init__(
        self, max_concurrent_calls: int, max_streams: int, metrics: Metrics | None = None
    ) -> None:
        self.calls = _Gate(max_concurrent_calls, "calls")
        self.streams = _Gate(max_streams, "streams")
        self.metrics = metrics or Metrics()
        self._sheds_unlogged = 0
        self._shed_logged_at = 0.0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_EXEMPT_PREFIXES):
            return handler
        method = details.method
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, self.calls, False),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, False),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method, self.streams, True),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method, True),
            request_deserializer=parse,
            response_serializer=handler.response_serializer,
        )

    def _log(self, method: str, code: str, started: float, peer: str) -> None:
        # Every call is counted in the metrics; the log keeps failures and slow calls
        # (a line per successful call costs a sixth of a busy server's time).
        seconds = time.monotonic() - started
        self.metrics.observe_call(method, code, seconds)
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
                    "peer": peer,
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
        context.set_trailing_metadata(error_metadata(ResourceExhausted("", reason=SHED_REASON)))
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"server busy: more than {gate.limit} {gate.kind} in flight; retry with backoff",
        )

    def _wrap_unary(
        self, behavior: Callable[..., Any], method: str, gate: _Gate, streaming_requests: bool
    ) -> Callable[..., Any]:
        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            started = time.monotonic()
            peer = _peer(context)
            if not gate.enter():
                await self._refuse(method, context, gate)
            code = "OK"
            try:
                request = await _parsed(request, context, streaming_requests)
                return await behavior(request, context)
            except aio.AbortError:
                code = _aborted_code(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = "UNKNOWN"
                raise
            finally:
                gate.leave()
                self._log(method, code, started, peer)

        return unary

    def _wrap_stream(
        self, behavior: Callable[..., Any], method: str, streaming_requests: bool
    ) -> Callable[..., Any]:
        gate = self.streams
        writes = inspect.isasyncgenfunction(behavior)

        # A coroutine, not a generator: gRPC awaits it inside the call, so
        # everything below, the handler's clean-up included, runs while the
        # call is live (a generator handler abandoned by its client would be
        # closed later, by the garbage collector, after the call was freed).
        async def stream(request: Any, context: aio.ServicerContext) -> None:
            started = time.monotonic()
            peer = _peer(context)
            if not gate.enter():
                await self._refuse(method, context, gate)
            code = "OK"
            try:
                request = await _parsed(request, context, streaming_requests)
                if writes:
                    await write_all(behavior(request, context), context)
                else:  # the handler writes its answers itself
                    await behavior(request, context)
            except aio.AbortError:
                code = _aborted_code(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = "UNKNOWN"
                raise
            finally:
                gate.leave()
                self._log(method, code, started, peer)

        return stream


async def write_all(responses: AsyncIterator[Any], context: aio.ServicerContext) -> None:
    """Write every answer of a generator handler, and close it before returning."""
    try:
        async for item in responses:
            await context.write(item)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


class _Malformed:
    """Stands for request bytes that are not a valid message of the method's type."""

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
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


_MALFORMED_MESSAGE = "the request is not a valid message of this method's type"


async def _parsed(request: Any, context: aio.ServicerContext, streaming: bool) -> Any:
    if not streaming:
        if isinstance(request, _Malformed):
            context.set_trailing_metadata(
                error_metadata(InvalidArgument(_MALFORMED_MESSAGE, reason="MALFORMED_REQUEST"))
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _MALFORMED_MESSAGE)
        return request

    async def checked() -> Any:
        async for message in request:
            if isinstance(message, _Malformed):
                raise InvalidArgument(_MALFORMED_MESSAGE, reason="MALFORMED_REQUEST")
            yield message

    return checked()


# -- addresses -----------------------------------------------------------------------------


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) as host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(
    tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None
) -> grpc.ServerCredentials | None:
    if not tls_cert and not tls_key:
        return None
    if not (tls_cert and tls_key):
        raise ValueError("TLS needs both a certificate and a key")
    pair = (Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())
    if tls_client_ca:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=Path(tls_client_ca).read_bytes(), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])


# -- the server ----------------------------------------------------------------------------


async def serve(
    data_dir: str | os.PathLike[str],
    listen: str = DEFAULT_LISTEN,
    *,
    ready: Callable[[int], Any] | None = None,
    stop: asyncio.Event | None = None,
    grace: float = DEFAULT_GRACE_SECONDS,
    threads: int = DEFAULT_THREADS,
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
    max_streams: int = DEFAULT_MAX_STREAMS,
    max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY,
    max_streams_per_account: int = DEFAULT_MAX_STREAMS_PER_ACCOUNT,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    map_size: int | None = None,
    multi_process: bool = False,
    reuse_port: bool = False,
    durable: bool = True,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    handle_signals: bool = True,
    health_interval: float = DEFAULT_HEALTH_INTERVAL,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    retention_interval: float = DEFAULT_RETENTION_INTERVAL,
    metrics_port: int = 0,
    http_listen: str | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    ``ready(port)`` is called once the server accepts calls, with the bound port.
    """
    host, _ = split_listen(listen)
    credentials = _credentials(tls_cert, tls_key, tls_client_ca)
    if credentials is None and not is_loopback(host):
        raise ValueError(
            f"plaintext is only allowed on loopback; {host} needs a TLS certificate and key"
        )
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    store = Store(data_dir, map_size=map_size or None, multi_process=multi_process, durable=durable)
    executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="idlink-call")
    notifier: ChangeNotifier | None = None
    server: aio.Server | None = None
    health_watch: asyncio.Task[None] | None = None
    audit = AuditLog(store)
    sweeper: asyncio.Task[None] | None = None
    auth: AuthInterceptor | None = None
    try:
        engine = IdentityEngine(store, load_master_secret(data_dir))
        notifier = ChangeNotifier(engine, loop)
        runtime = Runtime(engine, executor, notifier)
        metrics = Metrics(lambda: store.stats()["used_bytes"])
        runtime.metrics = metrics
        if metrics_port:
            metrics.serve(metrics_port)
        detector = AnomalyDetector(store, audit)
        audit.start()
        auth = AuthInterceptor(
            store,
            audit,
            detector,
            max_streams_per_key=max_streams_per_key,
            max_streams_per_account=max_streams_per_account,
            metrics=metrics,
        )
        server = aio.server(
            interceptors=[CallInterceptor(max_concurrent_calls, max_streams, metrics), auth],
            options=[
                ("grpc.server.max_pending_requests", CORE_PENDING_REQUESTS),
                ("grpc.server.max_pending_requests_hard_limit", CORE_PENDING_REQUESTS_HARD_LIMIT),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(runtime), server)
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(runtime), server)
        admin = AdminServicer(runtime)
        admin.security = Security(audit, detector)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
        if not port:
            raise OSError(f"cannot listen on {listen}")
        if http_listen:  # the HTTP/JSON gateway and the console (docs/http.md)
            from idlink.service.http import start_http

            await start_http(
                server,
                http_listen,
                stop,
                tls_cert=tls_cert,
                tls_key=tls_key,
                tls_client_ca=tls_client_ca,
                reuse_port=reuse_port,
                grace=grace,
                store=store,
                audit=audit,
            )
        await server.start()
        auth.start()
        notifier.start()
        if retention_interval > 0:
            sweeper = asyncio.create_task(_retention_sweeps(engine, executor, retention_interval))
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if health_interval > 0:
            health_watch = asyncio.create_task(
                _watch_store_health(
                    StoreHealth(store, min_free_bytes), health_servicer, health_interval
                )
            )
        log.info(
            "serving",
            extra={
                "listen": listen,
                "port": port,
                "tls": credentials is not None,
                "data": os.fspath(data_dir),
                "pid": os.getpid(),
                "native": _native_implementations(),
            },
        )
        if ready is not None:
            ready(port)
        await stop.wait()
        log.info("shutting down", extra={"grace_seconds": grace})
        await _cancel(health_watch)
        await health_servicer.enter_graceful_shutdown()
        runtime.stopping.set()
        await server.stop(grace)
        server = None
    finally:
        await _cancel(health_watch)
        if auth is not None:
            await auth.stop()
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if server is not None:
            await server.stop(None)
        if notifier is not None:
            await loop.run_in_executor(None, notifier.stop)
        executor.shutdown(wait=True)
        audit.stop()
        store.close()
        log.info("stopped")


async def _retention_sweeps(
    engine: IdentityEngine, executor: concurrent.futures.Executor, interval: float
) -> None:
    """Apply every account's retention limits (SPEC 8) every ``interval`` seconds."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            result = await loop.run_in_executor(executor, apply_retention, engine)
        except Exception as exc:  # a failed sweep is retried at the next interval
            log.error("retention sweep failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            continue
        if result.engagements_deleted or result.customers_erased:
            log.info(
                "retention sweep",
                extra={
                    "engagements_deleted": result.engagements_deleted,
                    "customers_erased": result.customers_erased,
                },
            )


class StoreHealth:
    """Whether the store can be written now (SPEC 9 health), and recovery after a failed write.

    A failed commit stops the store's writer (design.md): the probe reopens the
    store, then checks the free disk space and commits a tiny write. ``None``
    means "cannot tell yet" (the writer is busy with a long write).
    """

    PROBE_KEY = b"health-probe"

    def __init__(self, store: Store, min_free_bytes: int, timeout: float = 10.0) -> None:
        self.store = store
        self.min_free_bytes = min_free_bytes
        self.timeout = timeout

    def probe(self) -> tuple[bool | None, str]:
        """(writable, why not) after trying to recover a failed store."""
        if not self.store.healthy:
            try:
                self.store.reopen()
            except IdlinkError as exc:
                return False, exc.message
        try:
            free = shutil.disk_usage(self.store.path).free
        except OSError as exc:
            return False, f"cannot stat the store's disk: {exc}"
        if free < self.min_free_bytes:
            return False, f"{free} bytes free on the store's disk (at least {self.min_free_bytes})"
        try:
            future = self.store.submit(
                lambda txn: txn.put_meta(self.PROBE_KEY, time.time_ns().to_bytes(8, "big"))
            )
            future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            return None, "the writer is busy"
        except IdlinkError as exc:
            return False, exc.message
        return True, ""


async def _watch_store_health(
    store_health: StoreHealth, health_servicer: health.aio.HealthServicer, interval: float
) -> None:
    """Probe the store every ``interval`` seconds; health follows the probe."""
    loop = asyncio.get_running_loop()
    serving = True
    while True:
        await asyncio.sleep(interval)
        writable, reason = await loop.run_in_executor(None, store_health.probe)
        if writable is None or writable == serving:
            continue
        serving = writable
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, status)
        if serving:
            log.warning("store writable again: SERVING")
        else:
            log.error("store cannot be written: NOT_SERVING", extra={"reason": reason})


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _native_implementations() -> dict[str, str]:
    try:
        from idlink._native import implementations

        return implementations()
    except Exception:  # reporting only
        return {}


def _serve_worker(data_dir: str, listen: str, options: dict[str, Any]) -> None:
    configure_logging(options.pop("log_level", "INFO"))
    try:
        asyncio.run(serve(data_dir, listen, **options))
    except Exception as exc:
        log.error("worker failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from None


def run_server(
    data_dir: str | os.PathLike[str] = DEFAULT_DATA,
    listen: str = DEFAULT_LISTEN,
    *,
    workers: int = 1,
    map_size: int = 0,
    log_level: str = "INFO",
    **options: Any,
) -> int:
    """Run the server in this process (or ``workers`` processes sharing the store); exit status."""
    configure_logging(log_level)
    try:
        split_listen(listen)
        # One server (with all its workers) per data folder (store.env.ServerLock).
        with server_lock(data_dir, f"idlink serve --listen {listen}"):
            if workers <= 1:
                asyncio.run(serve(data_dir, listen, map_size=map_size or None, **options))
                return 0
            return _run_workers(os.fspath(data_dir), listen, workers, map_size, log_level, options)
    except (ValueError, OSError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 2
    except Exception as exc:
        log.error("cannot start", extra={"error": f"{type(exc).__name__}: {exc}"})
        return 1


def _run_workers(
    data_dir: str, listen: str, workers: int, map_size: int, log_level: str, options: dict[str, Any]
) -> int:
    """Several processes on one port (SO_REUSEPORT) over one multi-process store (SPEC 9)."""
    if split_listen(listen)[1] == 0:
        raise ValueError("several workers need a fixed port")
    # The key file is created here, once: workers starting together would race for it.
    load_master_secret(data_dir)
    context = multiprocessing.get_context("spawn")  # LMDB is opened after the process starts
    worker_options = dict(
        options, map_size=map_size or None, multi_process=True, reuse_port=True, log_level=log_level
    )
    metrics_port = int(worker_options.pop("metrics_port", 0) or 0)
    processes = [
        context.Process(
            target=_serve_worker,
            args=(
                data_dir,
                listen,
                dict(worker_options, metrics_port=metrics_port + index if metrics_port else 0),
            ),
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()

    def forward(signum: int, _frame: Any) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((p.exitcode or 0 for p in processes), default=0)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the server with the options of :func:`add_serve_arguments`."""
    return run_server(
        args.data,
        args.listen,
        workers=args.workers,
        map_size=args.map_size,
        log_level=args.log_level,
        grace=args.grace,
        max_concurrent_calls=args.max_concurrent_calls,
        max_streams=args.max_streams,
        max_streams_per_key=args.max_streams_per_key,
        max_streams_per_account=args.max_streams_per_account,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        health_interval=args.health_interval,
        min_free_bytes=args.min_free_disk,
        retention_interval=args.retention_interval,
        metrics_port=args.metrics_port,
        http_listen=args.http_listen,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idlink.service.server")
    add_serve_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
