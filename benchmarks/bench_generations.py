"""Re-clustering an export on each engine: records/s and rounds, beside scipy (docs/scale-out.md).

The records are the shared CRM-like generator (``benchmarks.datasets``),
written straight to an export folder (contact PIDs keyed by a fixed bench
secret; no store is needed to time the engines). Each engine computes the
generation of the same export in the same run; on the cap-free set every
partition is checked against scipy's connected components, on the CRM-like
set (a placeholder hub) against the local engine.

    python -m benchmarks.bench_generations --records 1000000 --engines local,duckdb,spark
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.datasets import SIZES, SMOKE_SIZE, contact_of, crm_records, same_partition
from benchmarks.report import Entry, entry
from idlink._native import _contacts
from idlink.domain.contacts import ContactKey, prepare_contact
from idlink.domain.keytypes import AccountConfig
from idlink.generations.engines import compute
from idlink.generations.export import key_type_rows, write_export
from idlink.generations.manifest import secret_fingerprint

ACCOUNT = "bench"
SECRET = b"idlink bench secret".ljust(32, b"\0")


def write_dataset_export(dataset, folder: Path) -> tuple[Path, list[bytes]]:
    """The dataset as an export (a first load: no customers yet); the PIDs in contact order."""
    config = AccountConfig(ACCOUNT, 1)
    index: dict[bytes, int] = {}
    types: list[str] = []
    sources: list[str] = []
    invalid: list[str] = []
    blocked: list[bool] = []
    records = {"source": [], "record_id": [], "observed_at_us": [], "deleted": [], "contacts": []}
    for record in dataset.records:
        entries = []
        for key in record.contacts:
            prepared = prepare_contact(SECRET, config, key)
            if prepared.pid not in index:
                index[prepared.pid] = len(index)
                types.append(key.type)
                sources.append(prepared.source)
                reason = prepared.invalid_reason
                invalid.append("" if reason == "BLOCKED" else reason)
                blocked.append(reason == "BLOCKED")
            entries.append(
                {"contact_pid": prepared.pid, "type": key.type, "source": prepared.source}
            )
        records["source"].append(record.source)
        records["record_id"].append(record.record_id)
        records["observed_at_us"].append(record.observed_at_us)
        records["deleted"].append(False)
        records["contacts"].append(entries)
    pids = list(index)
    contacts = pa.table(
        {
            "contact_pid": pa.array(pids, pa.binary()),
            "type": types,
            "source": sources,
            "invalid_reason": invalid,
            "blocked": blocked,
            "customer_pid": pa.array([b""] * len(pids), pa.binary()),
            "first_seen": pa.array(np.arange(1, len(pids) + 1), pa.int64()),
        }
    )
    key_types = pa.Table.from_pylist(key_type_rows(config.key_types.values()))
    policy = pa.table(
        {
            "max_contacts": [config.policy.max_contacts],
            "isolate_min_connections": [config.policy.isolate_min_connections],
        }
    )
    out = folder / "export"
    write_export(
        out,
        account=ACCOUNT,
        fingerprint=secret_fingerprint(SECRET),
        change_seq=0,
        tables={
            "records": pa.table(records),
            "contacts": contacts,
            "key_types": key_types,
            "account_policy": policy,
        },
    )
    return out, pids


_pids: dict[tuple[str, str, str], bytes] = {}


def pid_of(key: ContactKey) -> bytes:
    """The contact PID of a clean contact (SPEC 2.3), as prepare_contact computes it."""
    contact = contact_of(key)
    found = _pids.get(contact)
    if found is None:
        found = _pids[contact] = _contacts.contact_pid(SECRET, contact[0], contact[1], contact[2])
    return found


def scipy_labels(dataset, pids: list[bytes]) -> np.ndarray:
    """scipy's component of every contact, in the export's contact order."""
    labels = {}
    for label, members in dataset.customers().items():
        for type_, source, value in members:
            labels[pid_of(ContactKey(type_, value, source))] = label
    return np.array([labels[p] for p in pids], np.int64)


def scipy_components_seconds(inputs) -> float:
    """scipy's connected components on the engines' graph (the same edges), timed alone."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    src, dst = inputs.edges()
    n = inputs.contacts
    started = time.perf_counter()
    matrix = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n)).tocsr()
    connected_components(matrix, directed=False)
    return round(time.perf_counter() - started, 3)


def run(count: int, engines: list[str], master: str, cap_free: bool) -> dict:
    dataset = crm_records(count, cap_free=cap_free)
    report: dict = {"records": count, "set": dataset.name, "engines": {}}
    with tempfile.TemporaryDirectory(prefix="idlink-bench-gen-") as folder:
        started = time.perf_counter()
        export, pids = write_dataset_export(dataset, Path(folder))
        report["export_seconds"] = round(time.perf_counter() - started, 2)
        truth = None
        if cap_free:
            started = time.perf_counter()
            truth = scipy_labels(dataset, pids)
            report["scipy_seconds_with_ids"] = round(time.perf_counter() - started, 2)
        for engine in engines:
            started = time.perf_counter()
            try:
                generation = compute(export, engine, master=master)
            except Exception as exc:  # an engine that cannot run here (Spark without Java)
                report["engines_failed"] = {**report.get("engines_failed", {}), engine: str(exc)}
                continue
            seconds = time.perf_counter() - started
            if truth is None:
                truth = generation.labels
            if "scipy_components_seconds" not in report:
                report["scipy_components_seconds"] = scipy_components_seconds(generation.inputs)
            report["engines"][engine] = {
                "seconds": round(seconds, 2),
                "records_per_second": round(count / seconds),
                "rounds": generation.details.get("rounds"),
                "replayed_components": generation.details["replayed_components"],
                "same_partition": bool(same_partition(generation.labels, truth)),
                "details": generation.details,
            }
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return report


ENGINES = ("local", "duckdb", "spark")


def bench_generations(*, smoke: bool) -> list[Entry]:
    """``make bench``: records/s and rounds of each engine on the cap-free set, beside scipy.

    One run per engine on the same export (1M records; the smoke size with
    ``--smoke``); each partition is checked equal to scipy's connected
    components. An engine that fails (Spark without Java) is a failed entry.
    """
    count = SMOKE_SIZE if smoke else SIZES[-1]
    out: list[Entry] = []
    try:
        report = run(count, list(ENGINES), "local[2]", True)
    except Exception as exc:  # a failed figure, not a failed run
        return [
            Entry(
                f"recluster of {count:,} records",
                0.0,
                "records/s",
                f"failed: {exc}"[:200],
                0.0,
                0.0,
                None,
                False,
            )
        ]
    scipy_seconds = report.get("scipy_components_seconds") or 0.0
    scipy_rate = count / scipy_seconds if scipy_seconds else 0.0
    floor = "scipy connected_components on the same graph (components only)"
    for engine, found in report["engines"].items():
        rounds = f", {found['rounds']} rounds" if found.get("rounds") else ""
        name = (
            f"recluster --engine {engine}, {report['set']}{rounds}, "
            f"{found['replayed_components']} components replayed"
        )
        out.append(entry(name, found["records_per_second"], "records/s", floor, scipy_rate))
        equal = bool(found["same_partition"])
        out.append(
            Entry(
                f"partition of {report['set']} equals scipy's connected components: "
                f"recluster --engine {engine}",
                float(equal),
                "1 = equal",
                "scipy connected_components",
                1.0,
                float(equal),
                1.0,
                equal,
            )
        )
    for engine in ENGINES:
        if engine not in report["engines"]:
            out.append(
                Entry(
                    f"recluster --engine {engine}",
                    0.0,
                    "records/s",
                    "failed",
                    0.0,
                    0.0,
                    None,
                    False,
                )
            )
    out.append(
        entry(
            f"peak RSS of the recluster benchmark, {report['set']}",
            report["peak_rss_mib"],
            "MiB",
            "512 MiB",
            512,
            lower_is_better=True,
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--engines", default="local,duckdb,spark")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--crm-like", action="store_true", help="with the placeholder hub")
    args = parser.parse_args()
    report = run(args.records, args.engines.split(","), args.master, not args.crm_like)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
