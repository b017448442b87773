"""The options of ``idlink serve`` and their defaults (light: no server imports)."""

from __future__ import annotations

import argparse

DEFAULT_DATA = "./var/idlink"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_MAX_CONCURRENT_CALLS = 512
DEFAULT_MAX_STREAMS = 256
# Quotas of open streams (docs/operations.md, "Stream quotas"): one key, or one
# account, cannot take every stream slot from the others.
DEFAULT_MAX_STREAMS_PER_KEY = 32
DEFAULT_MAX_STREAMS_PER_ACCOUNT = 64
DEFAULT_RETENTION_INTERVAL = 3600.0
DEFAULT_HEALTH_INTERVAL = 2.0
# Below this much free disk the store is reported NOT_SERVING: LMDB can still
# reuse free pages for small writes, but the next batch that grows the file fails.
DEFAULT_MIN_FREE_BYTES = 16 << 20


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``idlink serve`` (also ``python -m idlink.service.server``)."""
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help=f"store folder (default {DEFAULT_DATA})"
    )
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the store")
    parser.add_argument(
        "--map-size", type=int, default=0, help="LMDB map size in bytes (0: default)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="seconds to finish calls at shutdown",
    )
    parser.add_argument("--max-concurrent-calls", type=int, default=DEFAULT_MAX_CONCURRENT_CALLS)
    parser.add_argument("--max-streams", type=int, default=DEFAULT_MAX_STREAMS)
    parser.add_argument(
        "--max-streams-per-key",
        type=int,
        default=DEFAULT_MAX_STREAMS_PER_KEY,
        help=f"open streams one API key may hold (default {DEFAULT_MAX_STREAMS_PER_KEY})",
    )
    parser.add_argument(
        "--max-streams-per-account",
        type=int,
        default=DEFAULT_MAX_STREAMS_PER_ACCOUNT,
        help=f"open streams one account may hold (default {DEFAULT_MAX_STREAMS_PER_ACCOUNT})",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain (TLS)")
    parser.add_argument("--tls-key", help="PEM private key (TLS)")
    parser.add_argument("--tls-client-ca", help="PEM CA of client certificates (mutual TLS)")
    parser.add_argument(
        "--health-interval",
        type=float,
        default=DEFAULT_HEALTH_INTERVAL,
        help="seconds between store health probes (0: off)",
    )
    parser.add_argument(
        "--min-free-disk",
        type=int,
        default=DEFAULT_MIN_FREE_BYTES,
        help="bytes of free disk below which health is NOT_SERVING",
    )
    parser.add_argument(
        "--retention-interval",
        type=float,
        default=DEFAULT_RETENTION_INTERVAL,
        help="seconds between retention sweeps (0: off)",
    )
    parser.add_argument(
        "--http-listen",
        default=None,
        help="also serve the HTTP/JSON API and the console on HOST:PORT (docs/http.md)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on 127.0.0.1:PORT (workers: PORT + index; 0: off)",
    )
