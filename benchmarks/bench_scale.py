"""Growth: the engine's ingest rate and resolve latency as one store grows.

``python -m benchmarks.bench_scale [--sizes 100000,1000000,10000000]`` (``make
bench-scale`` runs the 10M point; ``make bench`` runs 100k and 1M through
:func:`bench_growth`). One durable, encrypted store is filled in batches of
1,000 records; at each size it reports

- the ingest rate over the last records before that size (10% of it, at most
  100,000 records), so that the figure is the rate *at* that size;
- the p50 and p99 of single engine resolves of known contacts, at rest;
- the store's bytes on disk per contact;
- the bytes written per record over the same window (``wchar``): what LMDB's
  commits write, every page a batch dirtied, which grows with the B-trees.

The records are a CRM stream: 7 in 10 name a new person (a phone, an email,
and every other time a source's id), 3 in 10 name a person already seen, so
customers grow and shared keys keep arriving at every size.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

from benchmarks.report import Entry, entry, write
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.security.crypto import open_store

ACCOUNT = "bench"
BATCH = 1_000
RESOLVES = 2_000


def stream(seed: int = 11) -> Iterator[tuple[RecordInput, int]]:
    """Records of a growing CRM, each with the number of persons seen so far."""
    rng = random.Random(seed)
    people = 0
    i = 0
    while True:
        if people and rng.random() < 0.3:
            person = rng.randrange(people)
        else:
            person = people
            people += 1
        contacts = [
            ContactKey("phone", f"+1415{person:07d}"),
            ContactKey("email", f"user{person}@example.com"),
        ]
        if i % 2:
            contacts.append(ContactKey("id", f"C{i}", "crm"))
        yield RecordInput("crm", str(i), contacts, 1_700_000_000_000_000 + i), people
        i += 1


def _disk_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def _written_bytes() -> int:
    """Bytes this process has handed to write(2) and its kind so far (/proc/self/io ``wchar``).

    LMDB writes every page a commit dirtied: the bytes per record show how
    many pages each record's random keys dirty as the B-trees grow.
    """
    with open("/proc/self/io") as counters:
        for line in counters:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def growth(sizes: list[int]) -> list[dict[str, float]]:
    """Fill one store up to each size in turn; the figures at each size."""
    sizes = sorted(sizes)
    out = []
    records = stream()
    done = 0
    people = 0
    ids = 0
    with tempfile.TemporaryDirectory() as folder, open_store(folder, durable=True) as store:
        engine = IdentityEngine(store, b"k" * 32)
        for size in sizes:
            window = max(BATCH, min(size // 10, 100_000))
            timed_from = size - window
            started: float | None = None
            counted_from = done
            written_from = 0
            while done < size:
                if started is None and done >= timed_from:
                    started = time.perf_counter()
                    counted_from = done
                    written_from = _written_bytes()
                batch = []
                for _ in range(min(BATCH, size - done)):
                    record, people = next(records)
                    ids += len(record.contacts) == 3
                    batch.append(record)
                engine.ingest(ACCOUNT, batch)
                done += len(batch)
            assert started is not None
            rate = (done - counted_from) / (time.perf_counter() - started)
            written = (_written_bytes() - written_from) / (done - counted_from)
            rng = random.Random(size)
            keys = [
                ContactKey("phone", f"+1415{rng.randrange(people):07d}") for _ in range(RESOLVES)
            ]
            latencies = []
            for key in keys:
                start = time.perf_counter()
                engine.resolve(ACCOUNT, key)
                latencies.append(time.perf_counter() - start)
            latencies.sort()
            contacts = 2 * people + ids
            point = {
                "records": size,
                "ingest_rate": rate,
                "resolve_p50_us": statistics.median(latencies) * 1e6,
                "resolve_p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
                "contacts": contacts,
                "bytes_per_contact": _disk_bytes(folder) / contacts,
                "written_per_record": written,
            }
            out.append(point)
            # A long run shows each size as it is reached, not only at the end.
            print(f"growth: {point}", file=sys.stderr, flush=True)
    return out


def _size_name(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1_000}k"


def entries(points: list[dict[str, float]]) -> list[Entry]:
    """Each size against the smallest: rate (target 0.7), resolve p50 (at most 2x), bytes."""
    base = points[0]
    base_name = _size_name(int(base["records"]))
    out = []
    for point in points:
        name = _size_name(int(point["records"]))
        out.append(
            entry(
                f"engine ingest rate at {name} records",
                point["ingest_rate"],
                "records/s",
                f"the rate at {base_name}",
                base["ingest_rate"],
                target=0.7 if point is not base else None,
            )
        )
        out.append(
            entry(
                f"engine resolve p50 at {name} records (p99 {point['resolve_p99_us']:,.0f} µs)",
                point["resolve_p50_us"],
                "µs",
                f"the p50 at {base_name}",
                base["resolve_p50_us"],
                target=0.5 if point is not base else None,
                lower_is_better=True,
            )
        )
        out.append(
            entry(
                f"bytes written per record ingested at {name} records (LMDB's dirtied pages)",
                point["written_per_record"],
                "bytes",
                f"bytes written per record at {base_name}",
                base["written_per_record"],
                lower_is_better=True,
            )
        )
        out.append(
            entry(
                f"store bytes per contact at {name} records ({int(point['contacts']):,} contacts)",
                point["bytes_per_contact"],
                "bytes",
                f"bytes per contact at {base_name}",
                base["bytes_per_contact"],
                lower_is_better=True,
            )
        )
    return out


def bench_growth(smoke: bool) -> list[Entry]:
    return entries(growth([2_000, 10_000] if smoke else [100_000, 1_000_000]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    started = time.perf_counter()
    found = entries(growth(sizes))
    _, md_path = write(found, "scale")
    print(md_path.read_text())
    print(f"{len(found)} figures in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
