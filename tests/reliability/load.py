"""Load: many concurrent Resolve callers while an ingest runs (SPEC 9).

A server on a fresh store gets some records, then ``readers`` threads call
``Resolve`` in a loop for ``seconds``: the first quarter with no writes (the
baseline), the rest while one ``Ingest`` stream writes as fast as the server
acknowledges. Reported: resolves done, errors by status (only
``RESOURCE_EXHAUSTED``, the documented load shedding, is allowed), resolve
p50/p99 without and with the writer (LMDB readers never wait for the writer,
so p99 should barely move), records ingested, and the server's resident
memory (VmRSS) at start, at its highest and at the end.

``python -m tests.reliability.load --seconds 60`` (``make load-test``);
``tests/reliability/test_load.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from idlink.v1 import admin_pb2, common_pb2, identity_pb2
from tests.reliability.harness import (
    Client,
    batch_records,
    configure_account,
    ingest_request,
    percentile,
    store_problems,
)
from tests.server import Server, make_token

ACCOUNT = "load-test"
PEOPLE = 5000
BATCH = 100
SEED_BATCHES = 20


@dataclass
class LoadReport:
    readers: int = 0
    seconds: float = 0.0
    resolves: int = 0
    resolves_per_second: float = 0.0
    shed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms_idle: float = 0.0
    p99_ms_idle: float = 0.0
    p50_ms_ingesting: float = 0.0
    p99_ms_ingesting: float = 0.0
    max_ms_ingesting: float = 0.0
    records_ingested: int = 0
    rss_kib_start: int = 0
    rss_kib_max: int = 0
    rss_kib_end: int = 0
    problems: list[str] = field(default_factory=list)


class _Readers:
    def __init__(self, client: Client, count: int) -> None:
        self.client = client
        self.count = count
        self.stop = threading.Event()
        self.ingesting = threading.Event()
        self.idle_ms: list[float] = []
        self.busy_ms: list[float] = []
        self.codes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        idle: list[float] = []
        busy: list[float] = []
        codes: Counter[str] = Counter()
        while not self.stop.is_set():
            person = rng.randrange(PEOPLE)
            request = identity_pb2.ResolveRequest(
                account=ACCOUNT,
                contact=common_pb2.ContactKey(type="phone", value=f"+1415{person:07d}"),
            )
            during_ingest = self.ingesting.is_set()
            started = time.perf_counter()
            try:
                self.client.identity.Resolve(request, metadata=self.client.metadata, timeout=30)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[_code(exc)] += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            (busy if during_ingest else idle).append(elapsed)
        with self._lock:
            self.idle_ms += idle
            self.busy_ms += busy
            self.codes.update(codes)


def _code(exc: grpc.RpcError) -> str:
    """The status name; RESOURCE_EXHAUSTED of the load shedder is ``SHED``."""
    name = exc.code().name  # type: ignore[attr-defined]
    metadata = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    reason = metadata.get("idlink-error-reason")
    if name == "RESOURCE_EXHAUSTED" and reason is None:
        return "SHED"
    return f"{name}:{reason}" if reason else name


def _ingest_forever(
    client: Client, first_seq: int, stop: threading.Event, counter: list[int]
) -> None:
    """One Ingest stream that sends batches until ``stop``; counts acknowledged records."""
    window = threading.Semaphore(4)

    def requests() -> Iterator[identity_pb2.IngestRequest]:
        seq = first_seq
        while not stop.is_set():
            if not window.acquire(timeout=1):
                continue
            yield ingest_request(ACCOUNT, seq, batch_records(3, seq, BATCH, PEOPLE))
            seq += 1

    last = first_seq - 1
    for ack in client.identity.Ingest(requests(), metadata=client.metadata, timeout=600):
        for _ in range(ack.committed_seq - last):
            window.release()
        counter[0] += ack.records
        last = ack.committed_seq


def run(workdir: Path, *, seconds: float, readers: int = 16) -> LoadReport:
    report = LoadReport(readers=readers, seconds=seconds)
    data = workdir / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data).start()
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
            # The readers are one key reading every customer: far over the
            # anomaly threshold (SPEC 8) that would throttle a real caller.
            client.admin.SetSecurityPolicy(
                admin_pb2.SetSecurityPolicyRequest(
                    account=ACCOUNT,
                    policy=admin_pb2.SecurityPolicy(anomaly_max_customers=1 << 30),
                ),
                metadata=client.metadata,
                timeout=30,
            )
            seeded = [0]
            # Seed: a few batches, so resolves find customers.
            for seq in range(1, SEED_BATCHES + 1):
                list(
                    client.identity.Ingest(
                        iter([ingest_request(ACCOUNT, seq, batch_records(3, seq, BATCH, PEOPLE))]),
                        metadata=client.metadata,
                        timeout=60,
                    )
                )
            report.rss_kib_start = server.rss_kib()
            pool = _Readers(client, readers)
            rss_max = report.rss_kib_start
            started = time.monotonic()
            pool.start()
            stop = threading.Event()
            writer = threading.Thread(
                target=_ingest_forever,
                args=(client, SEED_BATCHES + 1, stop, seeded),
                daemon=True,
            )
            while time.monotonic() - started < seconds:
                if not pool.ingesting.is_set() and time.monotonic() - started >= seconds / 4:
                    pool.ingesting.set()
                    writer.start()
                rss_max = max(rss_max, server.rss_kib())
                time.sleep(0.25)
            stop.set()
            pool.join()
            writer.join(60)
            elapsed = time.monotonic() - started
        report.rss_kib_max = max(rss_max, server.rss_kib())
        report.rss_kib_end = server.rss_kib()
        report.records_ingested = seeded[0]
    finally:
        status = server.stop()
    report.resolves = pool.codes["OK"]
    report.resolves_per_second = round(report.resolves / elapsed, 1)
    report.shed = pool.codes["SHED"]
    report.errors = {k: v for k, v in pool.codes.items() if k not in ("OK", "SHED")}
    report.p50_ms_idle = round(percentile(pool.idle_ms, 0.5), 2)
    report.p99_ms_idle = round(percentile(pool.idle_ms, 0.99), 2)
    report.p50_ms_ingesting = round(percentile(pool.busy_ms, 0.5), 2)
    report.p99_ms_ingesting = round(percentile(pool.busy_ms, 0.99), 2)
    report.max_ms_ingesting = round(max(pool.busy_ms, default=0.0), 2)
    if status != 0:
        report.problems.append(f"server exit status {status}")
    if "Traceback" in server.log():
        report.problems.append("the server log holds a traceback")
    report.problems += store_problems(data)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--readers", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idlink-load-") as workdir:
        report = run(Path(workdir), seconds=args.seconds, readers=args.readers)
    print(json.dumps(asdict(report), indent=2))
    return 0 if not report.errors and not report.problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
