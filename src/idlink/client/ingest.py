"""``idlink ingest``: stream a CSV or JSON Lines file of records into a server.

The file is checked completely before anything is sent: a bad line stops the
command with its line number and the reason, and nothing is written. Then the
records go out in numbered batches through ``IdlinkClient.ingest``, with a
progress bar; a dropped connection is survived by resending the batches not
yet acknowledged. File formats: see ``idlink.client.records``.

Exit status: 0 when every record is committed, 1 for a bad file, a record the
server refuses, or a server that cannot be reached.
"""

from __future__ import annotations

import array
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
from tqdm import tqdm

from idlink.client.client import IdlinkClient, IdlinkError
from idlink.client.records import detect_format, read_records
from idlink.v1 import common_pb2, identity_pb2

MAX_ERRORS_SHOWN = 20
MAX_REFUSED_SHOWN = 10
CONNECT_TIMEOUT = 10.0
_BATCH_SEQ = re.compile(r"^batch seq (\d+):")
_RECORD_INDEX = re.compile(r"^records\[(\d+)\]")


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def ingest_file(
    target: str,
    token: str | None,
    account: str,
    file: str | os.PathLike[str],
    batch_size: int = 500,
    *,
    reconnect_timeout: float = 30.0,
) -> int:
    """Check and stream one file of records; the exit status."""
    path = Path(file)
    if not path.is_file():
        _err(f"idlink ingest: {path}: no such file")
        return 1
    if not 1 <= batch_size <= 10_000:
        _err("idlink ingest: --batch-size must be 1 to 10000")
        return 1
    fmt = detect_format(path)

    # Pass 1: every line must be a record before anything is sent.
    count = deletions = 0
    problems: list[tuple[int, str]] = []
    for line, record, why in read_records(path, fmt):
        if record is None:
            problems.append((line, why))
        else:
            count += 1
            deletions += record.deleted
    if problems:
        for line, why in problems[:MAX_ERRORS_SHOWN]:
            _err(f"{path}:{line}: {why}" if line else f"{path}: {why}")
        if len(problems) > MAX_ERRORS_SHOWN:
            _err(f"... and {len(problems) - MAX_ERRORS_SHOWN} more bad lines")
        _err(f"idlink ingest: {len(problems)} bad line(s) in {path}; nothing was sent")
        return 1
    if count == 0:
        _err(f"idlink ingest: {path} holds no records")
        return 1

    # Pass 2: stream. lines[i] is the line of the i-th record, to name it in errors.
    lines = array.array("Q")

    def records() -> Iterator[identity_pb2.Record]:
        for line, record, _ in read_records(path, fmt):
            if record is not None:
                lines.append(line)
                yield record

    committed = 0
    refused: list[identity_pb2.RefusedRecord] = []
    outcomes: Counter[str] = Counter()
    bar = tqdm(total=count, unit=" records", desc=path.name, file=sys.stderr, leave=True)

    def on_ack(ack: identity_pb2.IngestAck) -> None:
        nonlocal committed
        committed += ack.records
        bar.update(ack.records)
        for item in ack.refused:
            outcomes[common_pb2.RecordOutcome.Name(item.outcome)] += 1
            if len(refused) < MAX_REFUSED_SHOWN:
                refused.append(item)

    started = time.monotonic()
    with IdlinkClient(target, token or None) as client:
        try:
            grpc.channel_ready_future(client.channel).result(timeout=CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            bar.close()
            _err(f"idlink ingest: cannot reach a server at {target} (after {CONNECT_TIMEOUT:g} s)")
            return 1
        try:
            last_seq = client.ingest(
                account,
                records(),
                batch_size,
                on_ack=on_ack,
                reconnect_timeout=reconnect_timeout,
            )
        except IdlinkError as error:
            bar.close()
            _report_server_error(error, path, lines, batch_size, target)
            _err(f"idlink ingest: {committed} record(s) were committed before the error")
            return 1
        except KeyboardInterrupt:
            bar.close()
            _err(f"idlink ingest: interrupted; {committed} record(s) were committed")
            return 130
    bar.close()
    seconds = max(time.monotonic() - started, 1e-9)

    applied = committed - deletions - sum(outcomes.values())
    parts = [f"{applied} applied"]
    parts += [f"{n} {name.removeprefix('RECORD_OUTCOME_').lower()}" for name, n in outcomes.items()]
    if deletions:
        parts.append(f"{deletions} deleted")
    print(
        f"ingested {committed} records from {path.name} in {seconds:.2f} s "
        f"({committed / seconds:.0f} records/s, {last_seq} batch{'es' * (last_seq != 1)}): "
        f"{', '.join(parts)}"
    )
    for item in refused:
        outcome = common_pb2.RecordOutcome.Name(item.outcome).removeprefix("RECORD_OUTCOME_")
        print(f"  {outcome.lower()}: {item.source}/{item.record_id} (batch {item.seq})")
    if sum(outcomes.values()) > len(refused):
        print(f"  ... and {sum(outcomes.values()) - len(refused)} more refused links")
    return 0


def _report_server_error(
    error: IdlinkError, path: Path, lines: array.array[int], batch_size: int, target: str
) -> None:
    """Say what went wrong, naming the file line when the server names a record."""
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        batch = _BATCH_SEQ.match(error.message)
        index = _RECORD_INDEX.match(error.field)
        if batch and index:
            position = (int(batch.group(1)) - 1) * batch_size + int(index.group(1))
            if position < len(lines):
                why = error.message[batch.end() :].strip()
                _err(f"{path}:{lines[position]}: the server refused the record: {why}")
                return
        _err(f"{path}: the server refused a batch: {error.message}")
        return
    if error.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        _err(f"idlink ingest: {target} refused the token ({error.code.name}): {error.message}")
        return
    _err(f"idlink ingest: {target}: {error}")
