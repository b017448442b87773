"""The composition root: one idlink server built from its configuration (SPEC 9).

:func:`create_server` opens the store, builds the engine, the runtime, the
interceptor (``service/auth.py``, with the call layer of
``service/interceptors.py`` outside its own, in one pass per call) and the
servicers, registers the standard health and reflection services and binds
the port; it returns the server, not yet started, and its port, so a test can
run one in its own process. :func:`serve` is the thin wrapper that
``idlink serve`` runs: start, wait for SIGTERM/SIGINT (or ``stop``), shut down
gracefully.

- Writes and long engine calls run on a thread pool; short reads run inline
  (``service/runtime.py``).
- Load shedding and call logs: ``service/interceptors.py``; stream quotas per
  key and per account: ``service/auth.py``.
- Message size limits, plaintext only on loopback (TLS or mutual TLS otherwise).
- Shutdown: health goes NOT_SERVING, change-feed streams end, calls in flight
  get ``grace`` seconds, the store is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from idlink.domain.engine import IdentityEngine
from idlink.domain.retention import apply_retention
from idlink.security.audit import AnomalyDetector, AuditLog
from idlink.security.crypto import open_store
from idlink.security.secrets import load_master_secret
from idlink.service.addresses import is_loopback, split_listen
from idlink.service.admin import AdminServicer
from idlink.service.auth import AuthInterceptor
from idlink.service.health import SERVICE_NAMES, StoreHealth, set_status, watch_store_health
from idlink.service.http.local import LocalCalls
from idlink.service.identity import IdentityServicer
from idlink.service.interceptors import (
    CORE_PENDING_REQUESTS,
    CORE_PENDING_REQUESTS_HARD_LIMIT,
    CallInterceptor,
)
from idlink.service.metrics import Metrics
from idlink.service.options import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HEALTH_INTERVAL,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_ACCOUNT,
    DEFAULT_MAX_STREAMS_PER_KEY,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_RETENTION_INTERVAL,
)
from idlink.service.profile import ProfileServicer
from idlink.service.runtime import ChangeNotifier, Runtime
from idlink.service.security_admin import Security
from idlink.store.env import Store
from idlink.v1 import admin_pb2_grpc, identity_pb2_grpc, profile_pb2_grpc

log = logging.getLogger("idlink.server")

DEFAULT_THREADS = 32
MAX_MESSAGE_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything one server is built from (the options of ``idlink serve``)."""

    data_dir: str | os.PathLike[str]
    listen: str = DEFAULT_LISTEN
    grace: float = DEFAULT_GRACE_SECONDS
    threads: int = DEFAULT_THREADS
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY
    max_streams_per_account: int = DEFAULT_MAX_STREAMS_PER_ACCOUNT
    max_message_bytes: int = MAX_MESSAGE_BYTES
    map_size: int | None = None
    multi_process: bool = False
    reuse_port: bool = False
    durable: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    retention_interval: float = DEFAULT_RETENTION_INTERVAL
    metrics_port: int = 0
    http_listen: str | None = None


# -- addresses -----------------------------------------------------------------------------


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


def checked_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """The TLS credentials of ``config``; ValueError for plaintext beyond loopback."""
    host, _ = split_listen(config.listen)
    credentials = _credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    if credentials is None and not is_loopback(host):
        raise ValueError(
            f"plaintext is only allowed on loopback; {host} needs a TLS certificate and key"
        )
    return credentials


# -- the server ----------------------------------------------------------------------------


class IdlinkServer:
    """One idlink server and what it owns: store, engine, pool, audit log, interceptors.

    Built (and bound) by :func:`create_server`; :meth:`start` serves,
    :meth:`shutdown` drains it gracefully, :meth:`close` releases everything
    (and is safe after a failed start or a shutdown).
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self.http_port = 0
        self.grpc: aio.Server | None = None
        self.store: Store | None = None
        self.engine: IdentityEngine | None = None
        self.runtime: Runtime | None = None
        self.metrics: Metrics | None = None
        self.auth: AuthInterceptor | None = None
        self.audit: AuditLog | None = None
        self.local: LocalCalls | None = None
        self.health = health.aio.HealthServicer()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._notifier: ChangeNotifier | None = None
        self._credentials: grpc.ServerCredentials | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health_watch: asyncio.Task[None] | None = None
        self._http_closing = asyncio.Event()
        self._closed = False

    async def _bind(self) -> int:
        config = self.config
        self._credentials = checked_credentials(config)
        loop = asyncio.get_running_loop()
        store = self.store = open_store(
            config.data_dir,
            map_size=config.map_size or None,
            multi_process=config.multi_process,
            durable=config.durable,
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(
            config.threads, thread_name_prefix="idlink-call"
        )
        self.audit = AuditLog(store)
        engine = self.engine = IdentityEngine(store, load_master_secret(config.data_dir))
        self._notifier = ChangeNotifier(engine, loop)
        runtime = self.runtime = Runtime(engine, self._executor, self._notifier)
        metrics = self.metrics = Metrics(lambda: store.stats()["used_bytes"])
        runtime.metrics = metrics
        if config.metrics_port:
            metrics.serve(config.metrics_port)
        detector = AnomalyDetector(store, self.audit)
        self.audit.start()
        self.auth = AuthInterceptor(
            engine,
            self.audit,
            detector,
            max_streams_per_key=config.max_streams_per_key,
            max_streams_per_account=config.max_streams_per_account,
            metrics=metrics,
            # One interceptor per call: load shedding and call logs, then admission.
            calls=CallInterceptor(config.max_concurrent_calls, config.max_streams, metrics),
        )
        interceptors: list[aio.ServerInterceptor] = [self.auth]
        server = self.grpc = aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.server.max_pending_requests", CORE_PENDING_REQUESTS),
                ("grpc.server.max_pending_requests_hard_limit", CORE_PENDING_REQUESTS_HARD_LIMIT),
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 1 if config.reuse_port else 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        admin = AdminServicer(runtime)
        admin.security = Security(self.audit, detector)
        # The HTTP gateway calls the same handlers in process, behind the same interceptors.
        self.local = LocalCalls(interceptors)
        for register, servicer in (
            (identity_pb2_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(runtime)),
            (profile_pb2_grpc.add_ProfileServiceServicer_to_server, ProfileServicer(runtime)),
            (admin_pb2_grpc.add_AdminServiceServicer_to_server, admin),
        ):
            register(servicer, server)
            self.local.add(register, servicer)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if self._credentials is None:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, self._credentials)
        if not port:
            raise OSError(f"cannot listen on {config.listen}")
        self.port = port
        return port

    async def start(self) -> None:
        """Serve: the HTTP gateway (if configured), gRPC, stream re-checks, sweeps, health."""
        config = self.config
        assert self.grpc is not None and self.auth is not None and self.engine is not None
        assert self._notifier is not None and self._executor is not None
        if config.http_listen:  # the HTTP/JSON gateway and the console (docs/http.md)
            from idlink.service.http import start_http

            http = await start_http(
                self.grpc,
                config.http_listen,
                self._http_closing,
                tls_cert=config.tls_cert,
                tls_key=config.tls_key,
                tls_client_ca=config.tls_client_ca,
                reuse_port=config.reuse_port,
                grace=config.grace,
                engine=self.engine,
                audit=self.audit,
                local=self.local,
            )
            self.http_port = http.port
        await self.grpc.start()
        self.auth.start()
        self._notifier.start()
        if config.retention_interval > 0:
            self._tasks.append(
                asyncio.create_task(
                    _retention_sweeps(self.engine, self._executor, config.retention_interval)
                )
            )
        await set_status(self.health, True)
        if config.health_interval > 0:
            assert self.store is not None
            self._health_watch = asyncio.create_task(
                watch_store_health(
                    StoreHealth(self.store, config.min_free_bytes),
                    self.health,
                    config.health_interval,
                )
            )
            self._tasks.append(self._health_watch)
        log.info(
            "serving",
            extra={
                "listen": config.listen,
                "port": self.port,
                "tls": self._credentials is not None,
                "data": os.fspath(config.data_dir),
                "pid": os.getpid(),
                "native": _native_implementations(),
            },
        )

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully: NOT_SERVING, change feeds end, calls in flight get ``grace`` s."""
        grace = self.config.grace if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        self._http_closing.set()
        await _cancel(self._health_watch)  # health stays NOT_SERVING from here on
        await self.health.enter_graceful_shutdown()
        if self.runtime is not None:
            self.runtime.stopping.set()
        if self.grpc is not None:
            server, self.grpc = self.grpc, None
            await server.stop(grace)

    async def close(self) -> None:
        """Release everything the server holds (calls still open are cut)."""
        if self._closed:
            return
        self._closed = True
        self._http_closing.set()
        for task in self._tasks:
            await _cancel(task)
        if self.auth is not None:
            await self.auth.stop()
        if self.grpc is not None:
            server, self.grpc = self.grpc, None
            await server.stop(None)
        if self._notifier is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._notifier.stop)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self.audit is not None:
            self.audit.stop()
        if self.store is not None:
            self.store.close()
        log.info("stopped")


async def create_server(config: ServerConfig) -> tuple[IdlinkServer, int]:
    """Build the server of ``config`` and bind its port (port 0: a free one); not started yet."""
    server = IdlinkServer(config)
    try:
        port = await server._bind()
    except BaseException:
        await server.close()
        raise
    return server, port


async def serve(
    data_dir: str | os.PathLike[str],
    listen: str = DEFAULT_LISTEN,
    *,
    ready: Callable[[int], Any] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    **options: Any,
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    ``options`` are the fields of :class:`ServerConfig`; ``ready(port)`` is
    called once the server accepts calls, with the bound port.
    """
    config = ServerConfig(data_dir, listen, **options)
    checked_credentials(config)  # refused before anything is opened
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    server, port = await create_server(config)
    try:
        await server.start()
        if ready is not None:
            ready(port)
        await stop.wait()
        await server.shutdown()
    finally:
        await server.close()


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
