"""Running the server: in this process, or in worker processes sharing one store (SPEC 9).

Several workers listen on one port (SO_REUSEPORT) over one multi-process
store; SIGTERM and SIGINT are forwarded to every worker, and each shuts down
gracefully (``service/app.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
from typing import Any

from idlink.security.secrets import load_master_secret
from idlink.service.addresses import split_listen
from idlink.service.app import serve
from idlink.service.logging import configure_logging
from idlink.service.options import DEFAULT_DATA, DEFAULT_LISTEN
from idlink.store.env import server_lock

log = logging.getLogger("idlink.server")


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
    """Run the server with the options of ``options.add_serve_arguments``."""
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
