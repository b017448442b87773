"""Crash during ``idlink load`` (issue 12): kill -9 the load, lose nothing, never serve a mix.

A server runs on a data folder and a client ingests through it all the time,
in numbered batches with durable acknowledgements (as in ``crash.py``).
Beside it, ``idlink load --records FILE`` runs as its own process on the same
folder, each time with a file of its own (record ids ``f<round>-<n>``), and
is killed with SIGKILL at a random moment of its run: while it computes the
generation, writes the staging account, copies, catches up, switches or
drops the old account id. After each kill the client pauses and the store is
read beside the running server:

- the account serves the old generation or the new one, never a mix: the
  killed load's file records are all there (the switch committed) or none;
- every record of every acknowledged batch is there;
- ``idlink check`` is clean (the partition equals a rebuild from the
  records; a staging account or an old account id left by the kill is
  hidden from it).

Then the same load runs again to its end, which must succeed (it drops what
the killed one left), and its file records are all there.

``python -m tests.reliability.crash_load --kills 10`` prints the figures;
``tests/reliability/test_crash_load.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.reliability import load_driver
from tests.reliability.crash import _stream
from tests.reliability.harness import (
    Client,
    RecordShape,
    batch_records,
    configure_account,
    missing_records,
    offline_engine,
    store_problems,
)
from tests.server import Server, make_token

ACCOUNT = "crash-test"  # the account crash.py's batches are made for
FILE_RECORDS = 300
LOAD_TIMEOUT = 300.0


@dataclass
class LoadCrashReport:
    kills: int = 0
    killed_after_switch: int = 0
    killed_before_switch: int = 0
    loads_completed: int = 0
    batches_acked: int = 0
    load_seconds: list[float] = field(default_factory=list)
    steps_killed: list[str] = field(default_factory=list)
    missing_acked_records: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing_acked_records and not self.problems

    def summary(self) -> dict[str, object]:
        figures = asdict(self)
        figures["missing_acked_records"] = len(self.missing_acked_records)
        figures["problems"] = len(self.problems)
        return figures


def file_records(seed: int, round_: int, count: int = FILE_RECORDS) -> list[RecordShape]:
    """The records of round ``round_``'s file: people the client's batches name too."""
    return [
        RecordShape(r.source, f"f{round_}-{i}", r.contacts, r.observed_at_us)
        for i, r in enumerate(batch_records(seed + 1000, round_, count))
    ]


def write_file(path: Path, records: Sequence[RecordShape]) -> Path:
    with path.open("w") as out:
        for r in records:
            row = {
                "source": r.source,
                "record_id": r.record_id,
                "observed_at": f"{r.observed_at_us / 1e6:.6f}",
                "contacts": [{"type": t, "value": v} for t, v in r.contacts],
            }
            out.write(json.dumps(row) + "\n")
    return path


class _Ingester:
    """The client: streams numbered batches until told to pause; remembers what was acked."""

    def __init__(self, target: str, token: str, seed: int, batch_size: int) -> None:
        self.target, self.token, self.seed, self.batch_size = target, token, seed, batch_size
        self.acked = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with Client(self.target, self.token) as client:
                acked, ended = _stream(
                    client,
                    self.seed,
                    self.acked + 1,
                    self.acked + 3,
                    self.batch_size,
                    lambda _: None,
                )
            if acked < self.acked:
                self.errors.append("acknowledged seq went back")
            self.acked = acked
            if ended != "OK":
                self.errors.append(f"ingest stream ended {ended}")
                time.sleep(0.2)

    def pause(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)


def _load(
    data: Path, path: Path, command: Sequence[str], kill_at: str | None = None
) -> subprocess.Popen[str]:
    args = ["--data", str(data), "--account", ACCOUNT, "--records", str(path)]
    if kill_at is not None:  # the load kills itself at a known step (load_driver.py)
        argv = [sys.executable, "-m", "tests.reliability.load_driver", *args, "--kill-at", kill_at]
    else:
        argv = [*command, "load", *args, "--no-progress"]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _present(data: Path, records: Sequence[RecordShape]) -> int:
    with offline_engine(data) as engine:
        return len(records) - len(missing_records(engine, ACCOUNT, records))


def run(
    workdir: Path,
    *,
    kills: int,
    seed: int = 3,
    batch_size: int = 50,
    command: Sequence[str] = (sys.executable, "-m", "idlink"),
    steps: Sequence[str] = load_driver.STEPS,
    log: Callable[[str], None] = print,
) -> LoadCrashReport:
    """``kills`` rounds: odd ones kill the load at the next of ``steps``, even ones at random."""
    rng = random.Random(seed)
    report = LoadCrashReport()
    data = workdir / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data).start()
    ingester = _Ingester(server.target, token, seed, batch_size)
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
        ingester.start()
        time.sleep(1.0)
        # A first load to its end: how long one takes, where the kills are spread.
        first = write_file(workdir / "f0.jsonl", file_records(seed, 0))
        started = time.monotonic()
        done = _load(data, first, command)
        out, err = done.communicate(timeout=LOAD_TIMEOUT)
        report.load_seconds.append(round(time.monotonic() - started, 2))
        if done.returncode != 0:
            report.problems.append(f"first load failed: {err.strip()[-2000:]}")
            return report
        report.loads_completed += 1
        duration = report.load_seconds[0]
        for round_ in range(1, kills + 1):
            records = file_records(seed, round_)
            path = write_file(workdir / f"f{round_}.jsonl", records)
            if round_ > 1:
                ingester.start()
            step = steps[(round_ // 2) % len(steps)] if round_ % 2 and steps else None
            proc = _load(data, path, command, kill_at=step)
            # Half the random kills aim at the end of the run: catch-up, switch, drop.
            if rng.random() < 0.5:
                delay = rng.uniform(0.3, duration * 1.1)
            else:
                delay = rng.uniform(duration * 0.7, duration * 1.05)
            try:
                proc.wait(timeout=LOAD_TIMEOUT if step else delay)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.communicate(timeout=60)
            killed = proc.returncode == -9
            ingester.pause()
            present = _present(data, records)
            if killed:
                report.kills += 1
                if present == len(records):
                    report.killed_after_switch += 1
                else:
                    report.killed_before_switch += 1
            elif proc.returncode != 0:
                report.problems.append(f"round {round_}: load exited {proc.returncode}")
            if present not in (0, len(records)):
                report.problems.append(
                    f"round {round_}: {present} of {len(records)} file records: a mix"
                )
            if step is not None:
                report.steps_killed.append(step)
                switched = step in ("switched", "mid-drop")
                if not killed or (present == len(records)) != switched:
                    report.problems.append(
                        f"round {round_}: killed at {step}, {present} file records "
                        f"(exit {proc.returncode}): expected the "
                        f"{'new' if switched else 'old'} generation"
                    )
            report.problems += [f"round {round_}: {p}" for p in store_problems(data)]
            when = f"at {step}" if step else f"after {delay:.2f} s"
            log(
                f"round {round_}: {'killed' if killed else 'finished'} {when}, "
                f"{present}/{len(records)} file records, acked seq {ingester.acked}"
            )
            # The next load (the same file) succeeds and finishes what the kill left.
            started = time.monotonic()
            again = _load(data, path, command)
            _, err = again.communicate(timeout=LOAD_TIMEOUT)
            # The account grows: the next kills are spread over the latest load's time.
            duration = round(time.monotonic() - started, 2)
            report.load_seconds.append(duration)
            if again.returncode != 0:
                report.problems.append(f"round {round_}: the load after the kill: {err[-2000:]}")
            else:
                report.loads_completed += 1
            if _present(data, records) != len(records):
                report.problems.append(f"round {round_}: file records missing after the load")
            report.problems += [f"round {round_} after: {p}" for p in store_problems(data)]
        ingester.pause()
    finally:
        ingester.pause()
        status = server.stop()
    if status not in (0, None):
        report.problems.append(f"server exit status {status} at the last stop")
    report.problems += ingester.errors[:5]
    report.batches_acked = ingester.acked
    with offline_engine(data) as engine:
        for seq in range(1, ingester.acked + 1):
            report.missing_acked_records += missing_records(
                engine, ACCOUNT, batch_records(seed, seq, batch_size)
            )
        with engine.read_keys() as txn:
            if list(txn.iter_hidden_account_names()) or txn.dropping():
                report.problems.append("a staging account or an old account id was left")
    report.problems += store_problems(data)
    if "Traceback" in server.log():
        report.problems.append("the server log holds a traceback")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.crash_load", description=__doc__
    )
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idlink-crash-load-") as temporary:
        report = run(Path(temporary), kills=args.kills, seed=args.seed)
    print(json.dumps(report.summary(), indent=2))
    for problem in (report.missing_acked_records + report.problems)[:50]:
        print("PROBLEM", problem)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
