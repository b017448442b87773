"""Prometheus metrics of one server process (SPEC 9).

Calls and latency per method and status code, calls shed by the load gates
and the stream quotas, records committed through ``Ingest``, and the store's
size, served on an optional HTTP port (``idlink serve --metrics-port``). With
``--workers N`` each worker serves on its own port: the given port plus the
worker's index.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The metrics of one server process, in a registry of their own."""

    def __init__(self, store_used_bytes: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "idlink_calls",
            "RPCs finished, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "idlink_call_seconds",
            "RPC time from the first request message to the last answer, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "idlink_shed",
            "Calls refused with RESOURCE_EXHAUSTED before they ran, by method and by the"
            " limit that refused them (calls, streams, key_streams, account_streams).",
            ["method", "gate"],
            registry=self.registry,
        )
        self.ingested = Counter(
            "idlink_ingested_records",
            "Records committed through Ingest.",
            registry=self.registry,
        )
        self.store_bytes = Gauge(
            "idlink_store_used_bytes", "Bytes of the store in use.", registry=self.registry
        )
        if store_used_bytes is not None:
            self.store_bytes.set_function(store_used_bytes)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics over HTTP on a loopback port (a scraper runs on the host)."""
        start_http_server(port, addr=host, registry=self.registry)
