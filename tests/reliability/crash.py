"""Crash during ingest (SPEC 9): kill -9 the server while it writes, lose nothing acknowledged.

The server runs as ``idlink serve`` on a data folder. Records stream in
through ``Ingest`` in numbered batches (``seq`` = batch number), and the
server is killed with SIGKILL at random moments: either a random time after
the stream opened, or right after a batch was sent (while the server reads or
commits it, i.e. inside a write transaction). Each time the server is started
again on the same folder and the stream resumes after the last acknowledged
``seq``; records are upserts by (source, record_id), so resending is harmless.

At the end the server is stopped and the store is opened offline:

- every record of every acknowledged batch is there;
- the stored partition equals a rebuild from the records (SPEC 3.2), no
  customer exceeds the cap or a key limit, and the other invariants of
  ``idlink check`` hold.

``python -m tests.reliability.crash --kills 20`` (``make crash-test``) prints
the figures; ``tests/reliability/test_crash.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from tests.reliability.harness import (
    Client,
    batch_records,
    configure_account,
    ingest_request,
    missing_records,
    offline_engine,
    store_problems,
)
from tests.server import Server, make_token

ACCOUNT = "crash-test"
# Batches offered per stream: more than are ever acknowledged before a kill.
BATCHES_PER_STREAM = 400


@dataclass
class CrashReport:
    kills: int = 0
    kills_after_send: int = 0
    streams: int = 0
    batches_acked: int = 0
    records_acked: int = 0
    records_per_second: float = 0.0
    streaming_seconds: float = 0.0
    restart_seconds_mean: float = 0.0
    restart_seconds_max: float = 0.0
    missing_acked_records: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    restart_times: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.missing_acked_records and not self.problems

    def summary(self) -> dict[str, object]:
        figures = asdict(self)
        figures.pop("restart_times")
        figures["missing_acked_records"] = len(self.missing_acked_records)
        figures["problems"] = len(self.problems)
        return figures


class _Killer:
    """Kills the server once: after a delay, or when told a batch was sent."""

    def __init__(self, server: Server, rng: random.Random) -> None:
        self.server = server
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self.after_send = rng.random() < 0.5
        # Kill right after this batch of the stream was handed to gRPC...
        self.after_batch = rng.randint(1, 40)
        self.jitter = rng.uniform(0.0, 0.02)
        # ...or after this long, wherever the server is.
        self.delay = rng.uniform(0.05, 2.0)
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if not self.after_send:
            self._timer = threading.Timer(self.delay, self.fire)
            self._timer.daemon = True
            self._timer.start()

    def sent(self, index: int) -> None:
        if self.after_send and index == self.after_batch:
            time.sleep(self.jitter)
            self.fire()

    def fire(self) -> None:
        with self._lock:
            if self.fired.is_set():
                return
            self.fired.set()
            self.server.kill()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Window:
    """Keeps at most ``size`` unacknowledged batches in flight, like a careful client.

    Without it gRPC would take every batch at once, and "right after a batch
    was sent" would mean "before the server read anything".
    """

    def __init__(self, acked: int, size: int = 4) -> None:
        self.size = size
        self.acked = acked
        self.closed = False
        self._cond = threading.Condition()

    def wait_room(self, seq: int, timeout: float = 60.0) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.closed or seq - self.acked <= self.size, timeout)

    def ack(self, seq: int) -> None:
        with self._cond:
            self.acked = seq
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def _requests(
    seed: int,
    first: int,
    last: int,
    batch_size: int,
    window: _Window,
    sent: Callable[[int], None],
) -> Iterator[object]:
    for index, seq in enumerate(range(first, last + 1), start=1):
        window.wait_room(seq)
        if window.closed:
            return
        yield ingest_request(ACCOUNT, seq, batch_records(seed, seq, batch_size))
        sent(index)


def _stream(
    client: Client, seed: int, first: int, last: int, batch_size: int, sent: Callable[[int], None]
) -> tuple[int, str]:
    """Send batches ``first..last``; the highest acknowledged seq and how the stream ended."""
    acked = first - 1
    window = _Window(acked)
    try:
        for ack in client.identity.Ingest(
            _requests(seed, first, last, batch_size, window, sent),
            metadata=client.metadata,
            timeout=300,
        ):
            if ack.committed_seq < acked:
                raise AssertionError(f"acknowledgements went back: {ack.committed_seq} < {acked}")
            acked = ack.committed_seq
            window.ack(acked)
    except grpc.RpcError as exc:
        return acked, exc.code().name  # type: ignore[attr-defined]
    finally:
        window.close()
    return acked, "OK"


def run(
    workdir: Path,
    *,
    kills: int,
    seed: int = 1,
    batch_size: int = 100,
    max_streams: int | None = None,
    log: Callable[[str], None] = print,
) -> CrashReport:
    """Ingest with ``kills`` SIGKILLs of the server, then check the store offline."""
    rng = random.Random(seed)
    report = CrashReport()
    data = workdir / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data).start()
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
        acked = 0
        max_streams = max_streams or kills * 4 + 4
        while report.kills < kills and report.streams < max_streams:
            report.streams += 1
            killer = _Killer(server, rng)
            started = time.monotonic()
            with Client(server.target, token) as client:
                killer.arm()
                new_acked, ended = _stream(
                    client, seed, acked + 1, acked + BATCHES_PER_STREAM, batch_size, killer.sent
                )
                killer.disarm()
            report.streaming_seconds += time.monotonic() - started
            if new_acked < acked:
                raise AssertionError("acknowledged seq went back")
            acked = new_acked
            if not killer.fired.is_set():
                if ended != "OK":
                    raise AssertionError(
                        f"stream failed without a kill: {ended}\n{server.log()[-3000:]}"
                    )
                continue
            report.kills += 1
            report.kills_after_send += int(killer.after_send)
            restart = time.monotonic()
            server.start()
            report.restart_times.append(time.monotonic() - restart)
            log(
                f"kill {report.kills}: {'after a batch' if killer.after_send else 'timed'}, "
                f"acked seq {acked}, stream ended {ended}, "
                f"restart {report.restart_times[-1]:.2f} s"
            )
        # A last stream with no kill, so the run ends on a clean shutdown.
        with Client(server.target, token) as client:
            started = time.monotonic()
            acked, ended = _stream(client, seed, acked + 1, acked + 5, batch_size, lambda _: None)
            report.streaming_seconds += time.monotonic() - started
            if ended != "OK":
                raise AssertionError(f"last stream failed: {ended}")
    finally:
        status = server.stop()
    if status not in (0, None):
        report.problems.append(f"server exit status {status} at the last stop")
    report.batches_acked = acked
    report.records_acked = acked * batch_size
    if report.streaming_seconds:
        report.records_per_second = round(report.records_acked / report.streaming_seconds, 1)
    report.streaming_seconds = round(report.streaming_seconds, 2)
    if report.restart_times:
        report.restart_seconds_mean = round(statistics.mean(report.restart_times), 3)
        report.restart_seconds_max = round(max(report.restart_times), 3)
    with offline_engine(data) as engine:
        for seq in range(1, acked + 1):
            report.missing_acked_records += missing_records(
                engine, ACCOUNT, batch_records(seed, seq, batch_size)
            )
    report.problems += store_problems(data)
    if "Traceback" in server.log():
        report.problems.append("the server log holds a traceback")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.crash", description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workdir", help="keep the store here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idlink-crash-") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(workdir, kills=args.kills, seed=args.seed, batch_size=args.batch_size)
    print(json.dumps(report.summary(), indent=2))
    for problem in (report.missing_acked_records + report.problems)[:50]:
        print("PROBLEM", problem)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
