"""A resolve over HTTP/JSON against the same resolve over gRPC, in one run (docs/http.md).

One ``idlink serve --http-listen`` subprocess; the same contacts are resolved
by CONCURRENCY callers over gRPC (grpc.aio) and over HTTP/1.1 keep-alive
(aiohttp's client), one after the other. The figure is HTTP resolves/s
beside gRPC resolves/s; the target is HTTP at most 1.3 times the gRPC cost
per resolve (a ratio of at least 1/1.3).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from grpc import aio

from benchmarks.bench_engine import make_records
from benchmarks.bench_grpc import (
    ACCOUNT,
    CONCURRENCY,
    _admin_token,
    _free_port,
    _process,
    allow_bulk_reads,
)
from benchmarks.report import Entry, entry
from idlink.v1 import common_pb2, identity_pb2, identity_pb2_grpc

TARGET_COST = 1.3


def _contact(key) -> dict[str, str]:
    out = {"type": key.type, "value": key.value}
    if key.source:
        out["source"] = key.source
    return out


async def _load(target: str, records, metadata) -> None:
    async with aio.insecure_channel(target) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        call = stub.Ingest(metadata=metadata)
        batch = 1000
        for seq, start in enumerate(range(0, len(records), batch), 1):
            chunk = records[start : start + batch]
            await call.write(
                identity_pb2.IngestRequest(
                    account=ACCOUNT,
                    seq=seq,
                    records=[
                        identity_pb2.Record(
                            source=r.source,
                            record_id=r.record_id,
                            contacts=[
                                common_pb2.ContactKey(type=c.type, value=c.value, source=c.source)
                                for c in r.contacts
                            ],
                        )
                        for r in chunk
                    ],
                )
            )
        await call.done_writing()
        async for _ in call:
            pass


async def _grpc_rate(target: str, contacts, seconds: float, metadata) -> tuple[float, list[float]]:
    latencies: list[float] = []
    requests = [
        identity_pb2.ResolveRequest(
            account=ACCOUNT,
            contact=common_pb2.ContactKey(type=c.type, value=c.value, source=c.source),
        )
        for c in contacts
    ]
    async with aio.insecure_channel(target) as channel:
        resolve = identity_pb2_grpc.IdentityServiceStub(channel).Resolve
        stop_at = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await resolve(requests[i % len(requests)], metadata=metadata, timeout=10)
                latencies.append((time.perf_counter() - started) * 1000)
                i += CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
        return len(latencies) / (time.perf_counter() - started), latencies


async def _http_rate(port: int, contacts, seconds: float, token: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    url = f"http://127.0.0.1:{port}/v1/accounts/{ACCOUNT}/contacts:resolve"
    bodies = [json.dumps({"contact": _contact(c)}).encode() for c in contacts]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP resolve answered {r.status}")
                latencies.append((time.perf_counter() - started) * 1000)
                i += CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
        return len(latencies) / (time.perf_counter() - started), latencies


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(pid: int, run) -> tuple[float, list[float], float]:
    """(resolves/s, latencies, server CPU microseconds per resolve) of one run."""
    before = _cpu_seconds(pid)
    rate, latencies = run()
    cpu = (_cpu_seconds(pid) - before) * 1e6 / max(1, len(latencies))
    return rate, latencies, cpu


def _p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def bench_http(*, smoke: bool, repeats: int) -> list[Entry]:
    seconds = 1.0 if smoke else 5.0
    records = make_records(2_000 if smoke else 20_000)
    contacts = [r.contacts[0] for r in records]
    with tempfile.TemporaryDirectory(prefix="idlink-bench-http-") as folder:
        root = Path(folder)
        data = root / "data"
        data.mkdir()
        token = _admin_token(str(data)) or ""
        metadata = (("authorization", f"Bearer {token}"),)
        target = f"127.0.0.1:{_free_port()}"
        http_port = _free_port()
        args = ["-m", "idlink", "serve", "--data", str(data), "--listen", target]
        args += ["--http-listen", f"127.0.0.1:{http_port}"]
        with _process(args, target, root / "idlink.log") as server:
            allow_bulk_reads(target, ACCOUNT, metadata)
            asyncio.run(_load(target, records, metadata))
            grpc_runs, http_runs = [], []
            # Interleaved, so that a slow moment of the machine hits both alike.
            for _ in range(repeats):
                grpc_runs.append(
                    _measured(
                        server.pid,
                        lambda: asyncio.run(_grpc_rate(target, contacts, seconds, metadata)),
                    )
                )
                http_runs.append(
                    _measured(
                        server.pid,
                        lambda: asyncio.run(_http_rate(http_port, contacts, seconds, token)),
                    )
                )
    grpc_rate, grpc_lat, _ = sorted(grpc_runs, key=lambda r: r[0])[len(grpc_runs) // 2]
    http_rate, http_lat, _ = sorted(http_runs, key=lambda r: r[0])[len(http_runs) // 2]
    grpc_cpu = sorted(r[2] for r in grpc_runs)[len(grpc_runs) // 2]
    http_cpu = sorted(r[2] for r in http_runs)[len(http_runs) // 2]
    return [
        entry(
            f"Resolve over HTTP/JSON, {CONCURRENCY} concurrent callers",
            http_rate,
            "resolves/s",
            "the same resolves over gRPC, same server",
            grpc_rate,
            target=round(1 / TARGET_COST, 3),
        ),
        entry(
            "server CPU per resolve over HTTP/JSON",
            http_cpu,
            "us",
            "server CPU per resolve over gRPC",
            grpc_cpu,
            lower_is_better=True,
            target=round(1 / TARGET_COST, 3),
        ),
        entry(
            f"Resolve over HTTP/JSON p50, {CONCURRENCY} concurrent callers",
            _p50(http_lat),
            "ms",
            "gRPC p50, same server",
            _p50(grpc_lat),
            lower_is_better=True,
        ),
    ]


if __name__ == "__main__":
    for e in bench_http(smoke=False, repeats=3):
        print(e)
