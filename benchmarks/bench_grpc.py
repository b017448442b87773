"""idlink over gRPC against a bare echo on the same server set-up, in one run.

Servers run as subprocesses on loopback ports; the load comes from one client
process (this one) with a fixed number of concurrent callers.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.bench_engine import make_records, raw_puts
from benchmarks.report import Entry, entry
from idlink.v1 import common_pb2, identity_pb2, identity_pb2_grpc

BATCH_NAME = "BatchResolve, 1,000 contacts a request"

ACCOUNT = "bench"
CONCURRENCY = 16
INGEST_BATCH = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_token(data: str) -> str | None:
    """A token for the benchmark account when the server checks callers."""
    try:
        from idlink.security.apikeys import create_key
    except ImportError:
        return None
    return str(create_key(data, ACCOUNT, "admin"))


@contextmanager
def _process(args: list[str], target: str, log: Path):
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(target) as channel:
            while True:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1)
                    break
                except grpc.FutureTimeoutError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"server did not start: {log.read_text()[-2000:]}"
                        ) from None
            if args[1] == "idlink":
                health = health_pb2_grpc.HealthStub(channel)
                while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != 1:
                    time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rss_anon_kib(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            total = int(line.split()[1])
    return total


class _PeakMemory:
    """Samples a process's RssAnon in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, _rss_anon_kib(self.pid))
            except OSError:
                return

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- load generators ---------------------------------------------------------------------


async def _unary_load(
    target: str, call, requests: list, seconds: float, metadata
) -> tuple[float, list[float]]:
    """Run CONCURRENCY callers for ``seconds``; return (calls/s, latencies in ms)."""
    latencies: list[float] = []
    async with aio.insecure_channel(target) as channel:
        method = call(channel)
        stop_at = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await method(requests[i % len(requests)], metadata=metadata, timeout=10)
                latencies.append((time.perf_counter() - started) * 1000)
                i += CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    _COUNTED[0] += len(latencies)
    return len(latencies) / elapsed, latencies


async def _stream_load(target: str, call, requests: list, count: int, metadata) -> float:
    """Pipeline ``count`` requests through one bidi stream; return answers/s."""
    async with aio.insecure_channel(target) as channel:
        stream = call(channel)(metadata=metadata)
        started = time.perf_counter()

        async def send() -> None:
            for i in range(count):
                await stream.write(requests[i % len(requests)])
            await stream.done_writing()

        sender = asyncio.ensure_future(send())
        answers = 0
        async for _ in stream:
            answers += 1
        await sender
        _COUNTED[0] += answers
        return answers / (time.perf_counter() - started)


# Calls made by the load generators (for the server's CPU time per call).
_COUNTED = [0]


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/PID/stat)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_call(pid: int, run):
    """``run()``'s result and the server's CPU microseconds per call made during it."""
    calls, cpu = _COUNTED[0], _cpu_seconds(pid)
    result = run()
    made = _COUNTED[0] - calls
    return result, (_cpu_seconds(pid) - cpu) * 1e6 / made if made else 0.0


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median(fn, repeats: int):
    results = [fn() for _ in range(repeats)]
    return sorted(results, key=lambda r: r if isinstance(r, float) else r[0])[len(results) // 2]


# -- the figures ----------------------------------------------------------------------------


def bench_grpc(*, smoke: bool, repeats: int) -> list[Entry]:
    out: list[Entry] = []
    seconds = 1.0 if smoke else 5.0
    ingest_records = 5_000 if smoke else 1_000_000
    with tempfile.TemporaryDirectory(prefix="idlink-bench-") as folder:
        root = Path(folder)
        data = root / "data"
        data.mkdir()
        token = _admin_token(str(data))
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        records = make_records(ingest_records)
        port = _free_port()
        target = f"127.0.0.1:{port}"
        idlink_args = ["-m", "idlink", "serve", "--data", str(data), "--listen", target]

        with _process(idlink_args, target, root / "idlink.log") as server:
            allow_bulk_reads(target, ACCOUNT, metadata)
            # Ingest over gRPC with durable commits, and the server's peak memory.
            with _PeakMemory(server.pid) as memory:
                rate = _ingest(target, records, metadata)
            with tempfile.TemporaryDirectory() as raw:
                floor = len(records) / _timed(lambda: raw_puts(raw, len(records), durable=True))
            out.append(
                entry(
                    f"Ingest over gRPC, {len(records) // 1000}k records, durable acks",
                    rate,
                    "records/s",
                    "raw py-lmdb batched random put, durable",
                    floor,
                    target=0.3,
                )
            )
            out.append(
                entry(
                    f"peak RssAnon during the {len(records) // 1000}k-record ingest",
                    memory.peak / 1024,
                    "MiB",
                    "target ceiling 512 MiB",
                    512,
                    lower_is_better=True,
                    target=1.0,
                )
            )

            out += _bulk_load(target, data, root, 5_000 if smoke else 200_000)

            resolve_requests = [
                identity_pb2.ResolveRequest(account=ACCOUNT, contact=_key(r.contacts[0]))
                for r in records[: min(len(records), 20_000)]
            ]
            answer = asyncio.run(_one_resolve(target, resolve_requests[0], metadata))
            request_bytes = len(resolve_requests[0].SerializeToString())
            reply_bytes = answer.ByteSize()
            batch = identity_pb2.BatchResolveRequest(
                account=ACCOUNT, contacts=[r.contact for r in resolve_requests[:1000]]
            )
            batch_reply_bytes = asyncio.run(_one_batch(target, batch, metadata)).ByteSize()

            def resolve_unary():
                return asyncio.run(
                    _unary_load(
                        target,
                        lambda ch: identity_pb2_grpc.IdentityServiceStub(ch).Resolve,
                        resolve_requests,
                        seconds,
                        metadata,
                    )
                )

            unary_rate, unary_lat = _median(resolve_unary, repeats)
            stream_rate = _median(
                lambda: asyncio.run(
                    _stream_load(
                        target,
                        lambda ch: identity_pb2_grpc.IdentityServiceStub(ch).StreamResolve,
                        resolve_requests,
                        2_000 if smoke else 50_000,
                        metadata,
                    )
                ),
                repeats,
            )
            batch_rate = _median(
                lambda: (
                    asyncio.run(
                        _unary_load(
                            target,
                            lambda ch: identity_pb2_grpc.IdentityServiceStub(ch).BatchResolve,
                            [batch],
                            seconds,
                            metadata,
                        )
                    )[0]
                    * 1000
                ),
                repeats,
            )
            workers_one = unary_rate

        echo_port = _free_port()
        echo_target = f"127.0.0.1:{echo_port}"
        echo_args = [
            "-m",
            "benchmarks.echo_server",
            "--listen",
            echo_target,
            "--reply-bytes",
            str(reply_bytes),
            "--batch-reply-bytes",
            str(batch_reply_bytes),
        ]
        echo_requests = [b"q" * request_bytes]
        batch_request = [b"q" * batch.ByteSize()]
        with _process(echo_args, echo_target, root / "echo.log"):

            def echo_unary():
                return asyncio.run(
                    _unary_load(
                        echo_target,
                        lambda ch: ch.unary_unary("/bench.Echo/Unary"),
                        echo_requests,
                        seconds,
                        (),
                    )
                )

            echo_rate, echo_lat = _median(echo_unary, repeats)
            echo_stream = _median(
                lambda: asyncio.run(
                    _stream_load(
                        echo_target,
                        lambda ch: ch.stream_stream("/bench.Echo/Stream"),
                        echo_requests,
                        2_000 if smoke else 50_000,
                        (),
                    )
                ),
                repeats,
            )
            echo_batch = _median(
                lambda: (
                    asyncio.run(
                        _unary_load(
                            echo_target,
                            lambda ch: ch.unary_unary("/bench.Echo/Batch"),
                            batch_request,
                            seconds,
                            (),
                        )
                    )[0]
                    * 1000
                ),
                repeats,
            )

        out.append(
            entry(
                f"Resolve unary, {CONCURRENCY} concurrent callers",
                unary_rate,
                "resolves/s",
                "bare echo unary, same sizes and server set-up",
                echo_rate,
                target=0.8,
            )
        )
        out.append(
            entry(
                f"Resolve unary p50, {CONCURRENCY} concurrent callers",
                _p(unary_lat, 0.5),
                "ms",
                "bare echo p50",
                _p(echo_lat, 0.5),
                lower_is_better=True,
            )
        )
        out.append(
            entry(
                f"Resolve unary p99, {CONCURRENCY} concurrent callers",
                _p(unary_lat, 0.99),
                "ms",
                "bare echo p99",
                _p(echo_lat, 0.99),
                lower_is_better=True,
                target=1 / 1.5,
            )
        )
        out.append(
            entry(
                "StreamResolve, one pipelined stream",
                stream_rate,
                "resolves/s",
                "bare echo bidi stream",
                echo_stream,
                target=0.7,
            )
        )
        out.append(
            entry(
                BATCH_NAME,
                batch_rate,
                "resolves/s",
                "echo of 1,000-item batches (items/s)",
                echo_batch,
            )
        )

        # --workers 2 against --workers 1, on the same data.
        port2 = _free_port()
        target2 = f"127.0.0.1:{port2}"
        with _process(
            ["-m", "idlink", "serve", "--data", str(data), "--listen", target2, "--workers", "2"],
            target2,
            root / "workers.log",
        ):
            workers_two, _ = _median(
                lambda: asyncio.run(
                    _unary_load(
                        target2,
                        lambda ch: identity_pb2_grpc.IdentityServiceStub(ch).Resolve,
                        resolve_requests,
                        seconds,
                        metadata,
                    )
                ),
                repeats,
            )
        out.append(
            entry(
                "Resolve unary, --workers 2",
                workers_two,
                "resolves/s",
                "--workers 1, same load",
                workers_one,
            )
        )
    return out


def _bulk_load(target: str, data: Path, root: Path, count: int) -> list[Entry]:
    """``idlink ingest`` of a CSV file into a fresh account, beside raw puts and scipy."""
    import csv

    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    records = make_records(count, seed=23)
    path = root / "bulk.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["source", "record_id", "observed_at", "phone", "email", "id"])
        for r in records:
            values = {c.type: c.value for c in r.contacts}
            writer.writerow(
                [
                    r.source,
                    r.record_id,
                    f"{r.observed_at_us / 1e6:.6f}",
                    values["phone"],
                    values["email"],
                    values.get("id", ""),
                ]
            )
    account = "bulk"
    token = ""
    try:
        from idlink.security.apikeys import create_key

        token = str(create_key(str(data), account, "admin"))
    except ImportError:
        pass
    command = [
        sys.executable,
        "-m",
        "idlink",
        "ingest",
        "--target",
        target,
        "--account",
        account,
        "--batch-size",
        "1000",
        str(path),
    ]
    if token:
        command[4:4] = ["--token", token]
    seconds = _timed(lambda: subprocess.run(command, check=True, capture_output=True, timeout=3600))
    rate = count / seconds

    ids: dict[str, int] = {}
    src: list[int] = []
    dst: list[int] = []
    for r in records:
        nodes = [ids.setdefault(c.type + c.value, len(ids)) for c in r.contacts]
        for other in nodes[1:]:
            src.append(nodes[0])
            dst.append(other)
    matrix = coo_matrix(
        (np.ones(len(src), np.int8), (src, dst)), shape=(len(ids), len(ids))
    ).tocsr()
    scipy_rate = count / _timed(lambda: connected_components(matrix, directed=False))
    with tempfile.TemporaryDirectory() as raw:
        put_rate = count / _timed(lambda: raw_puts(raw, count, durable=True))
    label = f"bulk load of a {count // 1000}k-record CSV with idlink ingest"
    return [
        entry(label, rate, "records/s", "raw py-lmdb batched random put, durable", put_rate),
        entry(label, rate, "records/s", "scipy connected_components on the same graph", scipy_rate),
    ]


def allow_bulk_reads(target: str, account: str, metadata) -> None:
    """A load test reads every customer: raise the anomaly threshold of its account."""
    from idlink.v1 import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        admin_pb2_grpc.AdminServiceStub(channel).SetSecurityPolicy(
            admin_pb2.SetSecurityPolicyRequest(
                account=account,
                policy=admin_pb2.SecurityPolicy(anomaly_max_customers=1_000_000_000),
            ),
            metadata=metadata,
            timeout=10,
        )


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _key(key) -> common_pb2.ContactKey:
    return common_pb2.ContactKey(type=key.type, value=key.value, source=key.source)


async def _one_resolve(target: str, request, metadata):
    async with aio.insecure_channel(target) as channel:
        return await identity_pb2_grpc.IdentityServiceStub(channel).Resolve(
            request, metadata=metadata
        )


async def _one_batch(target: str, request, metadata):
    async with aio.insecure_channel(target) as channel:
        return await identity_pb2_grpc.IdentityServiceStub(channel).BatchResolve(
            request, metadata=metadata
        )


def _ingest(target: str, records, metadata) -> float:
    """Stream every record through Ingest, waiting for the last acknowledgement."""

    async def run() -> float:
        async with aio.insecure_channel(target) as channel:
            stream = identity_pb2_grpc.IdentityServiceStub(channel).Ingest(metadata=metadata)
            batches = [records[i : i + INGEST_BATCH] for i in range(0, len(records), INGEST_BATCH)]
            started = time.perf_counter()

            async def send() -> None:
                for seq, batch in enumerate(batches, start=1):
                    await stream.write(
                        identity_pb2.IngestRequest(
                            account=ACCOUNT, seq=seq, records=[_record(r) for r in batch]
                        )
                    )
                await stream.done_writing()

            sender = asyncio.ensure_future(send())
            last = 0
            async for ack in stream:
                last = ack.committed_seq
            await sender
            if last != len(batches):
                raise RuntimeError(f"ingest acknowledged {last} of {len(batches)} batches")
            return len(records) / (time.perf_counter() - started)

    return asyncio.run(run())


def _record(r) -> identity_pb2.Record:
    record = identity_pb2.Record(
        source=r.source, record_id=r.record_id, contacts=[_key(c) for c in r.contacts]
    )
    record.observed_at.FromMicroseconds(r.observed_at_us)
    return record


# -- the resolve figures alone: python -m benchmarks.bench_grpc --resolve-only ------------------


def bench_resolve(*, records: int, seconds: float, repeats: int) -> list[Entry]:
    """Resolve, StreamResolve and BatchResolve beside the echo, on a store loaded offline.

    The records are put in with the engine before the server starts (no
    gRPC ingest, no bulk load), so the resolve figures take a minute, not
    the whole grpc group; the server is the same ``idlink serve``.
    """
    from idlink.domain.engine import IdentityEngine
    from idlink.security.crypto import open_store
    from idlink.security.secrets import load_master_secret

    out: list[Entry] = []
    with tempfile.TemporaryDirectory(prefix="idlink-bench-") as folder:
        root = Path(folder)
        data = root / "data"
        data.mkdir()
        token = _admin_token(str(data))
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        served = make_records(records)
        with open_store(data, durable=False) as store:
            engine = IdentityEngine(store, load_master_secret(data))
            for i in range(0, len(served), INGEST_BATCH):
                engine.ingest(ACCOUNT, served[i : i + INGEST_BATCH])
        target = f"127.0.0.1:{_free_port()}"
        args = ["-m", "idlink", "serve", "--data", str(data), "--listen", target]
        with _process(args, target, root / "idlink.log") as server:
            allow_bulk_reads(target, ACCOUNT, metadata)
            figures = _resolve_loads(target, served, metadata, seconds, repeats, server.pid)
        out += _against_echo(root, figures, seconds, repeats)
    return out


def _resolve_loads(target: str, records, metadata, seconds: float, repeats: int, pid: int) -> dict:
    stub = identity_pb2_grpc.IdentityServiceStub
    requests = [
        identity_pb2.ResolveRequest(account=ACCOUNT, contact=_key(r.contacts[0]))
        for r in records[: min(len(records), 20_000)]
    ]
    answer = asyncio.run(_one_resolve(target, requests[0], metadata))
    batch = identity_pb2.BatchResolveRequest(
        account=ACCOUNT, contacts=[r.contact for r in requests[:1000]]
    )
    batch_reply = asyncio.run(_one_batch(target, batch, metadata)).ByteSize()
    unary, unary_cpu = _cpu_per_call(
        pid,
        lambda: _median(
            lambda: asyncio.run(
                _unary_load(target, lambda ch: stub(ch).Resolve, requests, seconds, metadata)
            ),
            repeats,
        ),
    )
    stream, stream_cpu = _cpu_per_call(
        pid,
        lambda: _median(
            lambda: asyncio.run(
                _stream_load(target, lambda ch: stub(ch).StreamResolve, requests, 50_000, metadata)
            ),
            repeats,
        ),
    )
    batched = _median(
        lambda: (
            asyncio.run(
                _unary_load(target, lambda ch: stub(ch).BatchResolve, [batch], seconds, metadata)
            )[0]
            * 1000
        ),
        repeats,
    )
    return {
        "request_bytes": len(requests[0].SerializeToString()),
        "reply_bytes": answer.ByteSize(),
        "batch_bytes": batch.ByteSize(),
        "batch_reply_bytes": batch_reply,
        "unary": unary,
        "stream": stream,
        "batch": batched,
        "unary_cpu": unary_cpu,
        "stream_cpu": stream_cpu,
    }


def _against_echo(root: Path, figures: dict, seconds: float, repeats: int) -> list[Entry]:
    echo_target = f"127.0.0.1:{_free_port()}"
    echo_args = ["-m", "benchmarks.echo_server", "--listen", echo_target]
    echo_args += ["--reply-bytes", str(figures["reply_bytes"])]
    echo_args += ["--batch-reply-bytes", str(figures["batch_reply_bytes"])]
    echo_requests = [b"q" * figures["request_bytes"]]
    batch_request = [b"q" * figures["batch_bytes"]]
    with _process(echo_args, echo_target, root / "echo.log") as echo:
        (echo_rate, echo_lat), echo_cpu = _cpu_per_call(
            echo.pid,
            lambda: _median(
                lambda: asyncio.run(
                    _unary_load(
                        echo_target,
                        lambda ch: ch.unary_unary("/bench.Echo/Unary"),
                        echo_requests,
                        seconds,
                        (),
                    )
                ),
                repeats,
            ),
        )
        echo_stream, echo_stream_cpu = _cpu_per_call(
            echo.pid,
            lambda: _median(
                lambda: asyncio.run(
                    _stream_load(
                        echo_target,
                        lambda ch: ch.stream_stream("/bench.Echo/Stream"),
                        echo_requests,
                        50_000,
                        (),
                    )
                ),
                repeats,
            ),
        )
        echo_batch = _median(
            lambda: (
                asyncio.run(
                    _unary_load(
                        echo_target,
                        lambda ch: ch.unary_unary("/bench.Echo/Batch"),
                        batch_request,
                        seconds,
                        (),
                    )
                )[0]
                * 1000
            ),
            repeats,
        )
    unary_rate, unary_lat = figures["unary"]
    return [
        entry(
            f"Resolve unary, {CONCURRENCY} concurrent callers",
            unary_rate,
            "resolves/s",
            "bare echo unary, same sizes and server set-up",
            echo_rate,
            target=0.8,
        ),
        entry(
            f"Resolve unary p99, {CONCURRENCY} concurrent callers",
            _p(unary_lat, 0.99),
            "ms",
            "bare echo p99",
            _p(echo_lat, 0.99),
            lower_is_better=True,
            target=1 / 1.5,
        ),
        entry(
            "StreamResolve, one pipelined stream",
            figures["stream"],
            "resolves/s",
            "bare echo bidi stream",
            echo_stream,
            target=0.7,
        ),
        entry(
            "server CPU per unary Resolve",
            figures["unary_cpu"],
            "µs",
            "server CPU per bare echo unary call",
            echo_cpu,
            lower_is_better=True,
        ),
        entry(
            "server CPU per StreamResolve answer",
            figures["stream_cpu"],
            "µs",
            "server CPU per bare echo stream answer",
            echo_stream_cpu,
            lower_is_better=True,
        ),
        entry(
            BATCH_NAME,
            figures["batch"],
            "resolves/s",
            "echo of 1,000-item batches (items/s)",
            echo_batch,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="gRPC figures; --resolve-only: resolve alone")
    parser.add_argument("--resolve-only", action="store_true")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also Redis's look-ups (bench_redis) and the ratios against them, in this run",
    )
    args = parser.parse_args(argv)
    if args.resolve_only:
        entries = bench_resolve(records=args.records, seconds=args.seconds, repeats=args.repeats)
    else:
        entries = bench_grpc(smoke=False, repeats=args.repeats)
    if args.redis:
        from benchmarks import bench_redis

        entries += bench_redis.bench_redis(smoke=False, repeats=args.repeats)
        entries += bench_redis.against_idlink(entries)
    for e in entries:
        print(
            f"{e.name}: {e.value:,.1f} {e.unit} | {e.floor}: {e.floor_value:,.1f}"
            f" | ratio {e.ratio:.2f} (target {e.target})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
