"""``python -m idlink.service.server --data DIR --listen HOST:PORT``: the server without ``idlink``.

The server itself is built in ``service/app.py`` (the composition root,
``create_server``); its parts live beside it: ``interceptors.py`` (load
shedding, malformed requests, call logs), ``auth.py`` (admission and audit),
``health.py`` (store health), ``workers.py`` (worker processes and signals),
``logging.py`` (JSON log lines). The names below are kept for the ``idlink``
command and the benchmarks' echo server.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from idlink.service.app import MAX_MESSAGE_BYTES, ServerConfig, create_server, serve
from idlink.service.interceptors import CallInterceptor
from idlink.service.logging import configure_logging
from idlink.service.options import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_STREAMS,
    add_serve_arguments,
)
from idlink.service.workers import run_from_args, run_server

__all__ = [
    "DEFAULT_MAX_CONCURRENT_CALLS",
    "DEFAULT_MAX_STREAMS",
    "MAX_MESSAGE_BYTES",
    "CallInterceptor",
    "ServerConfig",
    "configure_logging",
    "create_server",
    "main",
    "run_from_args",
    "run_server",
    "serve",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options of ``idlink serve`` (and ``--log-level``) and run the server."""
    parser = argparse.ArgumentParser(prog="python -m idlink.service.server")
    add_serve_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
