"""Run the benchmark suite: ``python -m benchmarks.run [--smoke]``.

Writes ``benchmarks/results/latest.json`` (a list of entries ``{name, value,
unit, floor, floor_value, ratio, target, met}``, ratio oriented so that
higher is better) and ``latest.md``. ``--smoke`` runs every benchmark small,
to check that each one runs and reports; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time

from benchmarks import bench_engine, bench_native
from benchmarks.report import Entry, write


def _batch_against_engine(entries: list[Entry]) -> list[Entry]:
    """BatchResolve beside the engine-level resolve rate measured in this run.

    Like with like: the benchmark's batch asks the same 1,000 contacts again and
    again, so its answers are cached, and the engine's figure beside it is the
    one of repeat look-ups on a store that commits bookkeeping as a served one
    does (not the cold figure, which a warm batch would pass without trying).
    """
    from benchmarks.bench_grpc import BATCH_NAME
    from benchmarks.report import entry

    batch = next((e for e in entries if e.name == BATCH_NAME), None)
    engine = next((e for e in entries if e.name == bench_engine.SERVED_RESOLVE_NAME), None)
    if batch is None or engine is None:
        return []
    return [
        entry(
            BATCH_NAME + ", against the engine",
            batch.value,
            batch.unit,
            "engine-level repeat look-ups, no network",
            engine.value,
            target=0.7,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes, a check that all runs")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated groups: native,engine,grpc,http,redis,bulk,generations "
        "(peers: redis and bulk)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    groups = set(filter(None, args.only.split(","))) or {
        "native",
        "engine",
        "grpc",
        "http",
        "redis",
        "bulk",
        "generations",
    }
    if "peers" in groups:
        groups |= {"redis", "bulk"}
    smoke = args.smoke
    repeats = 1 if smoke else 3
    started = time.perf_counter()
    entries: list[Entry] = []
    if "native" in groups:
        entries += bench_native.bench_union_find(
            [100_000] if smoke else [1_000_000, 10_000_000], repeats
        )
        entries += bench_native.bench_contacts(5_000 if smoke else 100_000, repeats)
    if "engine" in groups:
        entries += bench_engine.bench_engine(
            records=2_000 if smoke else 100_000,
            resolves=2_000 if smoke else 50_000,
            repeats=repeats,
        )
    if "grpc" in groups:
        try:
            from benchmarks import bench_grpc
        except ImportError as exc:  # the gRPC layer is optional for a partial run
            print(f"grpc benchmarks unavailable: {exc}", file=sys.stderr)
        else:
            entries += bench_grpc.bench_grpc(smoke=smoke, repeats=repeats)
            entries += _batch_against_engine(entries)
    if "http" in groups:
        from benchmarks import bench_http

        entries += bench_http.bench_http(smoke=smoke, repeats=repeats)
    if "redis" in groups:
        from benchmarks import bench_redis

        entries += bench_redis.bench_redis(smoke=smoke, repeats=repeats)
        entries += bench_redis.against_idlink(entries)
    if "bulk" in groups:
        from benchmarks import bench_bulk

        entries += bench_bulk.bench_bulk(smoke=smoke)
    if "generations" in groups:
        from benchmarks import bench_generations

        entries += bench_generations.bench_generations(smoke=smoke)
    name = "smoke" if smoke else "latest"
    json_path, md_path = write(entries, name)
    print(md_path.read_text())
    print(
        f"{len(entries)} figures in {time.perf_counter() - started:.0f} s on "
        f"{platform.machine()} {platform.python_version()}; written to {json_path}"
    )
    missed = [e.name for e in entries if e.met is False]
    if missed and not smoke:
        print("targets missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
