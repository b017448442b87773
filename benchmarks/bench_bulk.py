"""Bulk clustering side by side on the same records: Splink, DuckDB, scipy and idlink (issue 12).

One cap-free data set (benchmarks/datasets.py), written once as the CSV that
``idlink ingest`` reads, is clustered in one run by:

- **Splink** deterministic linking with clustering on its DuckDB backend
  (exact rules on email, phone and (source, id));
- a **DuckDB SQL** connected-components query: large-star / small-star
  (Kiveris et al., SoCC 2014), one table per step, until a round changes no edge;
- **scipy** ``connected_components`` on the same contact graph: the floor;
- **idlink ingest** of the CSV through a real server with durable acks, and
  ``idlink load`` end to end once the command exists.

Each peer runs in a child process of its own (``python -m benchmarks.bench_bulk
--engine E``) that reads the CSV into Arrow first, untimed, so that its peak
RssAnon, sampled from ``/proc/PID/status``, is its own; the timing starts with
the records in memory. idlink is timed from the file to the last durable ack.
Every partition is checked equal to scipy's: a difference, a crash or a
time-out is reported as a failed entry, not raised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_grpc import _free_port, _PeakMemory, _process, allow_bulk_reads
from benchmarks.datasets import (
    BULK_SEED,
    CSV_COLUMNS,
    SIZES,
    SMOKE_SIZE,
    SOURCE_SCOPED,
    Contact,
    Dataset,
    crm_records,
    same_partition,
)
from benchmarks.report import Entry, entry

ACCOUNT = "bulk"
FULL_SIZE = SIZES[-1]  # 1M records
PEERS = ("scipy", "duckdb", "splink")
WORKER_TIMEOUT = 1800.0
IDLINK_TIMEOUT = 3600.0
CHECK_BATCH = 1000
CHECK_CALLS = 4
MEMORY_CEILING_MIB = 512
DEFAULT_MAX_CONTACTS = 100


# -- the peers, each in a child process ----------------------------------------------------


def _read_csv(path: Path):
    """The CSV as an Arrow table of strings (empty cells are nulls) with a record number ``rid``."""
    import pyarrow as pa
    from pyarrow import csv

    table = csv.read_csv(
        path,
        convert_options=csv.ConvertOptions(
            column_types={name: pa.string() for name in CSV_COLUMNS},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    return table.append_column("rid", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _scipy(table) -> tuple[float, np.ndarray, int]:
    """Plain connected components of the contact graph (a record's first contact to each other)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = table.num_rows
    keys = pa.concat_arrays(
        [
            pc.binary_join_element_wise("phone", table["phone"], "\x1f").combine_chunks(),
            pc.binary_join_element_wise("email", table["email"], "\x1f").combine_chunks(),
            pc.binary_join_element_wise(
                "id", table["source"], table["id"], "\x1f"
            ).combine_chunks(),
        ]
    )
    encoded = keys.dictionary_encode()
    nodes = len(encoded.dictionary)
    index = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    columns = [index[i * n : (i + 1) * n] for i in range(3)]
    first = columns[0].copy()
    for other in columns[1:]:
        first = np.where(first < 0, other, first)
    if (first < 0).any():
        raise ValueError("a record without contacts")
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    for column in columns:
        keep = (column >= 0) & (column != first)
        src.append(first[keep])
        dst.append(column[keep])
    s = np.concatenate(src)
    matrix = coo_matrix(
        (np.ones(len(s), np.int8), (s, np.concatenate(dst))), shape=(nodes, nodes)
    ).tocsr()
    started = time.perf_counter()
    _, labels = connected_components(matrix, directed=False)
    seconds = time.perf_counter() - started
    return seconds, labels[first].astype(np.int64), 0


# Large-star / small-star on an undirected edge set kept as (a, b) with a > b
# (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).
# Large-star: every node u links each larger neighbour to m(u), the least of u
# and its neighbours. Small-star: every node u links itself and each smaller
# neighbour to the least of them. A round that changes no edge leaves stars:
# every edge joins a contact to the least contact of its component.
_KEYS_SQL = """
CREATE TABLE keys AS
  SELECT rid, 0 AS pos, 'phone' || chr(31) || phone AS k FROM input WHERE phone IS NOT NULL
  UNION ALL
  SELECT rid, 1, 'email' || chr(31) || email FROM input WHERE email IS NOT NULL
  UNION ALL
  SELECT rid, 2, 'id' || chr(31) || source || chr(31) || id FROM input WHERE id IS NOT NULL;
CREATE TABLE nodes AS SELECT k, row_number() OVER () AS n FROM (SELECT DISTINCT k FROM keys);
CREATE TABLE record_nodes AS SELECT rid, pos, n FROM keys JOIN nodes USING (k);
CREATE TABLE first_node AS SELECT rid, arg_min(n, pos) AS n FROM record_nodes GROUP BY rid;
CREATE TABLE e AS
  SELECT DISTINCT greatest(f.n, r.n) AS a, least(f.n, r.n) AS b
  FROM first_node f JOIN record_nodes r USING (rid) WHERE r.n <> f.n;
"""
_LARGE_STAR_SQL = """
CREATE OR REPLACE TABLE large AS
  WITH sym AS (SELECT a AS x, b AS y FROM e UNION ALL SELECT b, a FROM e),
       m AS (SELECT x, least(x, min(y)) AS mn FROM sym GROUP BY x)
  SELECT DISTINCT s.y AS a, m.mn AS b FROM sym s JOIN m USING (x) WHERE s.y > s.x;
"""
_SMALL_STAR_SQL = """
CREATE OR REPLACE TABLE small AS
  WITH m AS (SELECT a, min(b) AS mn FROM large GROUP BY a)
  SELECT a, mn AS b FROM m
  UNION
  SELECT l.b AS a, m.mn AS b FROM large l JOIN m USING (a) WHERE l.b <> m.mn;
"""
_CHANGED_SQL = """
SELECT (SELECT count(*) FROM (SELECT a, b FROM small EXCEPT SELECT a, b FROM e))
     + (SELECT count(*) FROM (SELECT a, b FROM e EXCEPT SELECT a, b FROM small))
"""
_LABELS_SQL = """
SELECT f.rid, coalesce(e.b, f.n) AS label
FROM first_node f LEFT JOIN e ON e.a = f.n ORDER BY f.rid
"""
MAX_ROUNDS = 64


def _duckdb(table) -> tuple[float, np.ndarray, int]:
    """Connected components in DuckDB SQL, large-star / small-star; (seconds, labels, rounds)."""
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    con.register("input", table)
    con.execute(_KEYS_SQL)
    rounds = 0
    while True:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"large-star/small-star did not converge in {MAX_ROUNDS} rounds")
        con.execute(_LARGE_STAR_SQL)
        con.execute(_SMALL_STAR_SQL)
        row = con.execute(_CHANGED_SQL).fetchone()
        changed = int(row[0]) if row else 0
        con.execute("DROP TABLE e; ALTER TABLE small RENAME TO e;")
        if not changed:
            break
    result = con.execute(_LABELS_SQL).fetchnumpy()
    seconds = time.perf_counter() - started
    con.close()
    return seconds, np.asarray(result["label"], np.int64), rounds


def _splink(table) -> tuple[float, np.ndarray, int]:
    """Splink's deterministic linking and clustering on DuckDB, exact email, phone and id rules."""
    import logging

    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.WARNING)
    records = table.select(["rid", "source", "phone", "email", "id"]).rename_columns(
        ["unique_id", "source", "phone", "email", "id"]
    )
    started = time.perf_counter()
    db_api = DuckDBAPI()
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=[
            block_on("email"),
            block_on("phone"),
            block_on("source", "id"),
        ],
        comparisons=[],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(db_api.register(records), settings, log_level=logging.WARNING)
    pairs = linker.inference.deterministic_link()
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs)
    result = (
        clusters.as_duckdbpyrelation()
        .select("unique_id, cluster_id")
        .order("unique_id")
        .fetchnumpy()
    )
    seconds = time.perf_counter() - started
    if not np.array_equal(result["unique_id"], np.arange(table.num_rows)):
        raise RuntimeError("Splink's clusters do not hold every record once")
    # Cluster ids are record ids; labels as integers for the comparison.
    return seconds, np.asarray(result["cluster_id"], np.int64), 0


_ENGINES = {"scipy": _scipy, "duckdb": _duckdb, "splink": _splink}


def _worker(engine: str, csv_path: Path, out: Path) -> None:
    started = time.perf_counter()
    table = _read_csv(csv_path)
    read_seconds = time.perf_counter() - started
    seconds, labels, rounds = _ENGINES[engine](table)
    np.save(out.with_suffix(".npy"), labels)
    out.write_text(json.dumps({"seconds": seconds, "read_seconds": read_seconds, "rounds": rounds}))


class _Failed(Exception):
    """One engine did not give a figure; the message says why."""


def _run_peer(engine: str, csv_path: Path, root: Path) -> tuple[dict, np.ndarray, float]:
    """Run one peer in its own process; (its report, its labels, its peak RssAnon in MiB)."""
    out = root / f"{engine}.json"
    log = root / f"{engine}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_bulk",
                "--engine",
                engine,
                str(csv_path),
                str(out),
            ],
            stdout=sink,
            stderr=sink,
        )
        with _PeakMemory(proc.pid) as memory:
            try:
                code = proc.wait(timeout=WORKER_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise _Failed(f"no answer in {WORKER_TIMEOUT:.0f} s") from None
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
        raise _Failed(tail[0][:200])
    return json.loads(out.read_text()), np.load(out.with_suffix(".npy")), memory.peak / 1024


# -- idlink ---------------------------------------------------------------------------------


def _served_contact(contact) -> Contact:
    return (
        contact.type,
        contact.source if contact.type in SOURCE_SCOPED else "",
        contact.value,
    )


def check_served(target: str, token: str, dataset: Dataset) -> str:
    """Compare the customers a server gives with the plain components; "" when equal, else why.

    One BatchResolve per thousand components, of each component's first
    contact: the customer that comes back must hold exactly that component's
    contacts, and no two components may share a customer.
    """
    from grpc import aio

    from idlink.v1 import common_pb2, identity_pb2, identity_pb2_grpc

    customers = dataset.customers()
    expected = list(customers.values())
    metadata = (("authorization", f"Bearer {token}"),)
    problems: list[str] = []
    seen: dict[str, int] = {}

    async def run() -> None:
        async with aio.insecure_channel(target) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            gate = asyncio.Semaphore(CHECK_CALLS)

            async def one(start: int) -> None:
                chunk = expected[start : start + CHECK_BATCH]
                async with gate:
                    request = identity_pb2.BatchResolveRequest(
                        account=ACCOUNT,
                        contacts=[
                            common_pb2.ContactKey(type=m[0][0], source=m[0][1], value=m[0][2])
                            for m in chunk
                        ],
                    )
                    reply = await stub.BatchResolve(request, metadata=metadata, timeout=120)
                for offset, (members, answer) in enumerate(
                    zip(chunk, reply.responses, strict=True)
                ):
                    got = {_served_contact(c) for c in answer.customer.contacts}
                    pid = answer.customer.customer_pid
                    if got != set(members) and len(problems) < 5:
                        problems.append(
                            f"{members[0]}: {len(got)} contacts served, {len(members)} expected"
                        )
                    elif pid in seen and len(problems) < 5:
                        problems.append(f"components {seen[pid]} and {start + offset} share {pid}")
                    seen[pid] = start + offset

            await asyncio.gather(*(one(i) for i in range(0, len(expected), CHECK_BATCH)))

    asyncio.run(run())
    return "; ".join(problems)


def _idlink_ingest(csv_path: Path, dataset: Dataset, root: Path) -> dict:
    """``idlink ingest`` of the CSV into a fresh server with durable acks, then the check."""
    from idlink.security.apikeys import create_key

    data = root / "ingest-data"
    data.mkdir()
    target = f"127.0.0.1:{_free_port()}"
    serve = ["-m", "idlink", "serve", "--data", str(data), "--listen", target]
    with _process(serve, target, root / "ingest-server.log") as server:
        token = create_key(str(data), ACCOUNT, "admin")
        metadata = (("authorization", f"Bearer {token}"),)
        allow_bulk_reads(target, ACCOUNT, metadata)
        command = [
            sys.executable,
            "-m",
            "idlink",
            "ingest",
            "--target",
            target,
            "--token",
            token,
            "--account",
            ACCOUNT,
            "--batch-size",
            "1000",
            str(csv_path),
        ]
        log = root / "ingest-client.log"
        with _PeakMemory(server.pid) as server_memory, log.open("wb") as sink:
            started = time.perf_counter()
            client = subprocess.Popen(command, stdout=sink, stderr=sink)
            with _PeakMemory(client.pid) as client_memory:
                try:
                    code = client.wait(timeout=IDLINK_TIMEOUT)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
                    raise _Failed(f"idlink ingest took over {IDLINK_TIMEOUT:.0f} s") from None
            seconds = time.perf_counter() - started
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
            raise _Failed(tail[0][:200])
        problem = check_served(target, token, dataset)
    return {
        "seconds": seconds,
        "server_mib": server_memory.peak / 1024,
        "client_mib": client_memory.peak / 1024,
        "problem": problem,
    }


def _load_available() -> bool:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "idlink", "load", "--help"],
            capture_output=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _idlink_load(csv_path: Path, dataset: Dataset, root: Path) -> dict:
    """``idlink load`` of the CSV into a fresh store, timed to its exit; then served and checked."""
    from idlink.security.apikeys import create_key

    data = root / "load-data"
    data.mkdir()
    # A fresh store with the account and its first key, untimed (the load
    # writes into a store; `idlink keys create` is how an operator starts one).
    token = create_key(str(data), ACCOUNT, "admin")
    log = root / "load.log"
    command = [
        sys.executable,
        "-m",
        "idlink",
        "load",
        "--data",
        str(data),
        "--account",
        ACCOUNT,
        "--records",
        str(csv_path),
    ]
    with log.open("wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=sink, stderr=sink)
        with _PeakMemory(proc.pid) as memory:
            try:
                code = proc.wait(timeout=IDLINK_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise _Failed(f"idlink load took over {IDLINK_TIMEOUT:.0f} s") from None
        seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
        raise _Failed(tail[0][:200])
    target = f"127.0.0.1:{_free_port()}"
    serve = ["-m", "idlink", "serve", "--data", str(data), "--listen", target]
    with _process(serve, target, root / "load-server.log"):
        allow_bulk_reads(target, ACCOUNT, (("authorization", f"Bearer {token}"),))
        problem = check_served(target, token, dataset)
    return {"seconds": seconds, "mib": memory.peak / 1024, "problem": problem}


# -- the figures ----------------------------------------------------------------------------


def _failed(name: str, unit: str, why: str) -> Entry:
    return Entry(name, 0.0, unit, f"failed: {why}", 0.0, 0.0, None, False)


def _memory(name: str, mib: float, *, target: float | None = None) -> Entry:
    """A peak RssAnon beside the ceiling idlink's ingest must keep (issue 11); higher is leaner."""
    ceiling = f"{MEMORY_CEILING_MIB} MiB, the ceiling of idlink's ingest"
    return entry(name, mib, "MiB", ceiling, MEMORY_CEILING_MIB, lower_is_better=True, target=target)


def _partition_entry(size: str, engine: str, equal: bool, why: str = "") -> Entry:
    name = f"partition of {size} equals scipy's connected components: {engine}"
    floor = "scipy connected_components" + (f" ({why})" if why else "")
    return Entry(name, float(equal), "1 = equal", floor, 1.0, float(equal), 1.0, equal)


def bench_bulk(*, smoke: bool) -> list[Entry]:
    """Every engine once on the same records (one run each: the 1M runs take minutes)."""
    count = SMOKE_SIZE if smoke else FULL_SIZE
    out: list[Entry] = []
    with tempfile.TemporaryDirectory(prefix="idlink-bulk-") as folder:
        root = Path(folder)
        dataset = crm_records(count, BULK_SEED, cap_free=True)
        size = dataset.name
        csv_path = dataset.write_csv(root / "records.csv")
        oracle = dataset.record_labels()

        peers: dict[str, tuple[float, float]] = {}  # engine -> (records/s, peak MiB)
        labels = {
            "scipy": "scipy connected_components",
            "duckdb": "DuckDB SQL large-star/small-star",
            "splink": "Splink deterministic link + clustering (DuckDB)",
        }
        rounds = 0
        for engine in PEERS:
            try:
                report, found, mib = _run_peer(engine, csv_path, root)
            except _Failed as why:
                print(f"bulk: {engine} failed: {why}", file=sys.stderr)
                out.append(_failed(f"{labels[engine]}, {size}", "records/s", str(why)))
                out.append(_partition_entry(size, labels[engine], False, "it failed"))
                continue
            equal = same_partition(found, oracle)
            out.append(_partition_entry(size, labels[engine], equal))
            peers[engine] = (count / report["seconds"], mib)
            if engine == "duckdb":
                rounds = report["rounds"]

        scipy_rate = peers.get("scipy", (0.0, 0.0))[0]
        floor = "scipy connected_components on the same graph"
        for engine in ("duckdb", "splink"):
            if engine not in peers:
                continue
            name = f"{labels[engine]}, {size}"
            if engine == "duckdb":
                name += f", {rounds} rounds"
            out.append(entry(name, peers[engine][0], "records/s", floor, scipy_rate))
        for engine in PEERS:
            if engine in peers:
                out.append(
                    _memory(f"peak RssAnon, {labels[engine]}, {size} in memory", peers[engine][1])
                )

        # idlink's current bulk path: the CSV through a real server.
        ingest_name = f"idlink ingest of the {size} CSV, durable acks"
        try:
            ingest = _idlink_ingest(csv_path, dataset, root)
        except Exception as exc:  # a failed figure, not a failed run
            print(f"bulk: idlink ingest failed: {exc}", file=sys.stderr)
            out.append(_failed(ingest_name, "records/s", str(exc)[:200]))
            out.append(_partition_entry(size, "idlink ingest", False, "ingest failed"))
        else:
            rate = count / ingest["seconds"]
            out.append(
                _partition_entry(size, "idlink ingest", not ingest["problem"], ingest["problem"])
            )
            out.append(entry(ingest_name, rate, "records/s", floor, scipy_rate))
            for engine in ("splink", "duckdb"):
                if engine in peers:
                    out.append(
                        entry(ingest_name, rate, "records/s", labels[engine], peers[engine][0])
                    )
            out.append(
                _memory(
                    f"peak RssAnon of idlink serve during the {size} CSV ingest",
                    ingest["server_mib"],
                    target=1.0,
                )
            )
            out.append(
                _memory(
                    f"peak RssAnon of the idlink ingest client, {size} CSV", ingest["client_mib"]
                )
            )

        # idlink load end to end: the targets of issue 12, once the command exists.
        load_name = f"idlink load of the {size} CSV, file to a serving store"
        if not _load_available():
            print("bulk: there is no `idlink load` yet: its figures are failed", file=sys.stderr)
            for engine in ("splink", "duckdb"):
                out.append(
                    Entry(
                        load_name,
                        0.0,
                        "records/s",
                        f"{labels[engine]} (idlink load is not available in this build)",
                        peers.get(engine, (0.0, 0.0))[0],
                        0.0,
                        1.0,
                        False,
                    )
                )
        else:
            try:
                load = _idlink_load(csv_path, dataset, root)
            except Exception as exc:
                print(f"bulk: idlink load failed: {exc}", file=sys.stderr)
                out.append(_failed(load_name, "records/s", str(exc)[:200]))
                out.append(_partition_entry(size, "idlink load", False, "load failed"))
            else:
                rate = count / load["seconds"]
                out.append(
                    _partition_entry(size, "idlink load", not load["problem"], load["problem"])
                )
                for engine in ("splink", "duckdb"):
                    out.append(
                        entry(
                            load_name,
                            rate,
                            "records/s",
                            labels[engine],
                            peers.get(engine, (0.0, 0.0))[0],
                            target=1.0,
                        )
                    )
                out.append(_memory(f"peak RssAnon of idlink load, {size} CSV", load["mib"]))
        del dataset, oracle

        # Why plain components are not customers: the same generator with the placeholder.
        crm = crm_records(count, BULK_SEED, cap_free=False)
        out.append(
            entry(
                f"largest plain connected component, {crm.name} "
                "(placeholder email; idlink isolates it)",
                crm.largest_component(),
                "contacts",
                "idlink's cap, max_contacts (default)",
                DEFAULT_MAX_CONTACTS,
                lower_is_better=True,
            )
        )
    return out


def load_functions_driver(count: int) -> dict:
    """The load's own three steps, timed phase by phase, without the command's copy and switch.

    ``python -m benchmarks.bench_bulk --load-functions 1000000``: the cap-free
    set as the CSV, a fresh store (the account created first, untimed), then
    ``generation_from_records``, ``check_fits`` and ``write_generation`` into
    the account; prints the phases, the CPU seconds and the peak RSS as JSON.
    """
    import os
    import resource

    from idlink.domain.engine import IdentityEngine
    from idlink.generations import materialize
    from idlink.security.crypto import open_store
    from idlink.security.secrets import load_master_secret

    with tempfile.TemporaryDirectory(prefix="idlink-load-driver-") as folder:
        root = Path(folder)
        dataset = crm_records(count, BULK_SEED, cap_free=True)
        csv_path = dataset.write_csv(root / "records.csv")
        del dataset
        data = root / "data"
        data.mkdir(mode=0o700)
        with open_store(data) as store:
            engine = IdentityEngine(store, load_master_secret(data))
            engine.write(ACCOUNT, "", lambda unit: None)
            cpu = os.times()
            started = time.perf_counter()
            planned = materialize.generation_from_records(engine, ACCOUNT, csv_path, progress=False)
            planned_at = time.perf_counter()
            materialize.check_fits(engine, planned)
            report = materialize.write_generation(
                engine, ACCOUNT, planned, progress=False, live_account=None
            )
            seconds = time.perf_counter() - started
            done = os.times()
        return {
            "records": count,
            "seconds": round(seconds, 2),
            "records_per_second": round(count / seconds),
            "cpu_seconds": round(done.user + done.system - cpu.user - cpu.system, 1),
            "plan_seconds": round(planned_at - started, 2),
            "plan": {k: round(v, 2) for k, v in planned.seconds.items()},
            "write": {k: round(v, 2) for k, v in report.seconds.items()},
            "rows": report.rows,
            "appended_batches": report.appended_batches,
            "plain_batches": report.plain_batches,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one peer of the bulk benchmark, in a child")
    parser.add_argument("--engine", choices=sorted(_ENGINES))
    parser.add_argument("--load-functions", type=int, metavar="RECORDS", default=0)
    parser.add_argument("csv", type=Path, nargs="?")
    parser.add_argument("out", type=Path, nargs="?")
    args = parser.parse_args(argv)
    if args.load_functions:
        print(json.dumps(load_functions_driver(args.load_functions), indent=2))
        return 0
    if not args.engine or args.csv is None or args.out is None:
        parser.error("--engine ENGINE CSV OUT, or --load-functions RECORDS")
    _worker(args.engine, args.csv, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
