"""The ``spark`` engine: the same algorithm in PySpark DataFrames, on any Spark cluster.

1. Linkability from the export (invalid, blocked, do-not-link), contact ids
   (``monotonically_increasing_id``), one spanning star per record.
2. Plain components by large-star / small-star (Kiveris et al., SoCC 2014;
   the algorithm GraphFrames runs), each round's edges checkpointed, rounds
   counted until the edges are a star forest (the fixed point).
3. The components over the cap or a key limit found with two aggregations,
   and only their records replayed by the exact engine as a grouped map
   (``applyInPandas``): every executor runs the domain's ``LinkGraph`` on one
   component at a time (:func:`idlink.generations.recluster.replay_component`).

The driver then numbers the customers and carries their PIDs over
(:mod:`idlink.generations.pids`). Executors need idlink installed (the
grouped map imports it); docs/scale-out.md says how to run on a cluster.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from idlink.generations.recluster import Generation, Inputs

MAX_ROUNDS = 200
DEFAULT_MASTER = "local[*]"
# Shuffle partitions for a local master: Spark's default of 200 is made for clusters.
LOCAL_SHUFFLE_PARTITIONS = 2
CHECKPOINT_ENV = "IDLINK_SPARK_CHECKPOINT_DIR"
DRIVER_MEMORY_ENV = "IDLINK_SPARK_DRIVER_MEMORY"

_lock = threading.Lock()
_session: SparkSession | None = None
_session_master: str | None = None
# Reliable checkpoints (to the checkpoint folder) on a cluster, local ones on a local master.
_reliable = [False]

REPLAYED_SCHEMA = "contact_pid binary, component long, part long, isolated boolean"


def session(master: str | None = None) -> SparkSession:
    """The process's SparkSession (one per process, created on first use)."""
    global _session, _session_master
    master = master or DEFAULT_MASTER
    with _lock:
        if _session is not None:
            if master != _session_master:
                raise ValueError(
                    f"a SparkSession on {_session_master} is running; cannot switch to {master}"
                )
            return _session
        local = master.startswith("local")
        if local:
            # A local master listens on loopback only; executors run this interpreter.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        builder = (
            SparkSession.builder.master(master)
            .appName("idlink-recluster")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        )
        if local:
            # A local master runs the executors in the driver's JVM: its heap is theirs.
            builder = (
                builder.config("spark.sql.shuffle.partitions", str(LOCAL_SHUFFLE_PARTITIONS))
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.driver.memory", os.environ.get(DRIVER_MEMORY_ENV, "2g"))
            )
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        checkpoints = os.environ.get(CHECKPOINT_ENV)
        if checkpoints or not local:
            spark.sparkContext.setCheckpointDir(
                checkpoints or tempfile.mkdtemp(prefix="idlink-spark-checkpoints-")
            )
        _session, _session_master = spark, master
        _reliable[0] = bool(checkpoints) or not local
        return spark


def stop() -> None:
    """Stop the process's SparkSession, if one runs."""
    global _session, _session_master
    with _lock:
        if _session is not None:
            _session.stop()
        _session, _session_master = None, None


def checkpoint(frame: DataFrame) -> DataFrame:
    """Cut the lineage: reliable on a cluster (survives a lost executor), local otherwise."""
    if _reliable[0]:
        return frame
    return frame.localCheckpoint(eager=True)


def large_star(edges: DataFrame) -> DataFrame:
    """Link every larger neighbour of u to the smallest node of u's closed neighbourhood."""
    from pyspark.sql import functions as F

    nb = edges.select(F.col("a").alias("u"), F.col("b").alias("v")).unionAll(
        edges.select(F.col("b").alias("u"), F.col("a").alias("v"))
    )
    smallest = nb.groupBy("u").agg(F.min("v").alias("m"))
    smallest = smallest.select("u", F.least("u", "m").alias("m"))
    return (
        nb.join(smallest, "u")
        .where(F.col("v") > F.col("u"))
        .select(F.col("v").alias("a"), F.col("m").alias("b"))
        .distinct()
    )


def small_star(edges: DataFrame) -> DataFrame:
    """Link u and each smaller neighbour of u to the smallest of them."""
    from pyspark.sql import functions as F

    smallest = edges.groupBy("a").agg(F.min("b").alias("m")).withColumnRenamed("a", "u")
    x = edges.select(F.col("a").alias("u"), F.col("b").alias("v")).unionAll(
        edges.select(F.col("a").alias("u"), F.col("a").alias("v"))
    )
    return (
        x.join(smallest, "u")
        .where(F.col("v") != F.col("m"))
        .select(F.col("v").alias("a"), F.col("m").alias("b"))
        .distinct()
    )


def large_small_star(edges: DataFrame) -> tuple[DataFrame, int]:
    """Rounds until nothing changes; returns the star edges (node, smallest) and the rounds."""
    from pyspark.sql import functions as F

    current = checkpoint(
        edges.where(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("a"), F.least("src", "dst").alias("b"))
        .distinct()
    )
    rounds = 0
    while not is_star_forest(current):
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"large-star / small-star did not converge in {MAX_ROUNDS} rounds")
        # The checkpoint cuts the lineage: round n does not recompute rounds 1..n-1.
        current = checkpoint(small_star(large_star(current)))
    return current, rounds


def is_star_forest(edges: DataFrame) -> bool:
    """Whether every node has at most one edge, to a node that has none: the fixed point.

    Each round keeps the components, and edges run from larger to smaller
    nodes, so in a star forest each star is one component and its centre is
    the component's smallest node.
    """
    from pyspark.sql import functions as F

    ends = edges.select(F.col("a").alias("n"), F.lit(1).alias("out"), F.lit(0).alias("inn"))
    ends = ends.unionAll(edges.select(F.col("b").alias("n"), F.lit(0), F.lit(1)))
    counted = ends.groupBy("n").agg(F.sum("out").alias("out"), F.max("inn").alias("inn"))
    return counted.where((F.col("out") > 1) | ((F.col("out") > 0) & (F.col("inn") > 0))).isEmpty()


def _replay_group(max_contacts: int, isolate_min: int) -> Any:
    """The grouped map: one flagged component's records, replayed by the exact engine."""

    def replay(frame: Any) -> Any:
        import pandas as pd

        from idlink.generations.recluster import NodeSpec, replay_component
        from idlink.store import codec

        component = int(frame["component"].iloc[0])
        frame = frame.sort_values(["record", "position"])
        records = []
        for _, rows in frame.groupby("record", sort=False):
            first = rows.iloc[0]
            key = codec.canonical_key(
                int(first["observed_at_us"]), str(first["source"]), str(first["record_id"])
            )
            records.append((key, [bytes(p) for p in rows["contact_pid"]]))
        nodes = {}
        own = {}
        for row in frame.drop_duplicates("contact_pid").itertuples(index=False):
            pid = bytes(row.contact_pid)
            own[pid] = int(row.label) == component
            nodes[pid] = NodeSpec(
                pid=pid,
                type_name=str(row.type),
                usable=bool(row.usable),
                reassignable=bool(row.reassignable),
                type_limit=int(row.type_limit),
                priority=int(row.priority),
                never_isolate=bool(row.never_isolate),
                first_seen=int(row.first_seen),
            )
        parts = replay_component(max_contacts, isolate_min, list(nodes.values()), records)
        out = [(pid, component, part, alone) for pid, (part, alone) in parts.items() if own[pid]]
        return pd.DataFrame(out, columns=["contact_pid", "component", "part", "isolated"])

    return replay


def _key_types_frame(spark: SparkSession, inputs: Inputs) -> DataFrame:
    # The key types as the recluster resolves them (a type not configured gets KeyType's defaults).
    rows = [
        (k.name, bool(k.reassignable), int(k.max_per_customer), int(k.priority))
        for k in inputs.key_types
    ]
    return spark.createDataFrame(
        rows, "type string, reassignable boolean, type_limit long, priority long"
    )


def run(inputs: Inputs, details: dict[str, Any], *, master: str | None = None) -> Generation:
    """Compute the generation of ``inputs`` on Spark; PIDs are assigned on the driver."""
    from pyspark.sql import functions as F

    from idlink.generations.recluster import Generation, assign_pids

    begun = time.perf_counter()
    spark = session(master)
    details["spark_master"] = spark.sparkContext.master
    details["session_seconds"] = round(time.perf_counter() - begun, 3)
    root = inputs.export.path
    began = time.perf_counter()

    def table(name: str) -> DataFrame:
        return spark.read.parquet(str((root / f"{name}.parquet").resolve()))

    key_types = F.broadcast(_key_types_frame(spark, inputs))
    policies = table("contact_policies").select("contact_pid", "do_not_link", "never_isolate")
    contacts = checkpoint(
        table("contacts")
        .join(policies, "contact_pid", "left")
        .join(key_types, "type", "left")
        .select(
            "contact_pid",
            "type",
            "first_seen",
            F.coalesce("reassignable", F.lit(False)).alias("reassignable"),
            F.coalesce("type_limit", F.lit(0)).alias("type_limit"),
            F.coalesce("priority", F.lit(0)).alias("priority"),
            F.coalesce("never_isolate", F.lit(False)).alias("never_isolate"),
            (
                (F.col("invalid_reason") == "")
                & ~F.col("blocked")
                & ~F.coalesce("do_not_link", F.lit(False))
            ).alias("usable"),
        )
        .withColumn("id", F.monotonically_increasing_id())
    )
    records = (
        table("records")
        .where(~F.col("deleted"))
        .withColumn("record", F.monotonically_increasing_id())
        .select(
            "record",
            "source",
            "record_id",
            "observed_at_us",
            F.posexplode("contacts").alias("position", "entry"),
        )
        .select(
            "record",
            "source",
            "record_id",
            "observed_at_us",
            "position",
            F.col("entry.contact_pid").alias("contact_pid"),
        )
    )
    entries = checkpoint(
        records.join(contacts.select("contact_pid", "id", "usable"), "contact_pid")
    )
    usable_entries = entries.where("usable")
    heads = usable_entries.groupBy("record").agg(F.min("id").alias("head"))
    edges = (
        usable_entries.join(heads, "record")
        .where(F.col("id") != F.col("head"))
        .select(F.col("id").alias("src"), F.col("head").alias("dst"))
    )
    star, rounds = large_small_star(edges)
    labelled = checkpoint(
        contacts.join(star.select(F.col("a").alias("id"), F.col("b").alias("root")), "id", "left")
        .withColumn("label", F.coalesce("root", "id"))
        .drop("root")
    )
    details["rounds"] = rounds

    # Components over the cap or over a key type's limit.
    sizes = labelled.groupBy("label").agg(F.count("*").alias("size"))
    over_cap = sizes.where(F.col("size") > inputs.max_contacts).select("label")
    over_limit = (
        labelled.where("usable AND type_limit > 0")
        .groupBy("label", "type", "type_limit")
        .agg(F.count("*").alias("count"))
        .where(F.col("count") > F.col("type_limit"))
        .select("label")
    )
    flagged = over_cap.union(over_limit).distinct().withColumnRenamed("label", "component")
    record_component = (
        entries.where("usable")
        .join(labelled.select("id", "label"), "id")
        .groupBy("record")
        .agg(F.min("label").alias("component"))
        .join(F.broadcast(flagged), "component")
    )
    nodes = labelled.select(
        "contact_pid",
        "type",
        "usable",
        "reassignable",
        "type_limit",
        "priority",
        "never_isolate",
        "first_seen",
        "label",
    )
    replay_rows = (
        entries.select("record", "source", "record_id", "observed_at_us", "position", "contact_pid")
        .join(record_component, "record")
        .join(nodes, "contact_pid")
    )
    replayed = replay_rows.groupBy("component").applyInPandas(
        _replay_group(inputs.max_contacts, inputs.isolate_min_connections), REPLAYED_SCHEMA
    )
    plain = labelled.select("contact_pid", "label").toArrow()
    exact = replayed.toArrow()
    details["replayed_components"] = int(flagged.count())
    details["spark_seconds"] = round(time.perf_counter() - began, 3)

    # Back to the driver's dense contact ids: plain labels, then the replayed parts.
    where = pc.index_in(
        plain.column("contact_pid").cast(pa.binary(16)), value_set=inputs.pids
    ).to_numpy(zero_copy_only=False)
    labels = np.empty(inputs.contacts, np.int64)
    labels[where.astype(np.int64)] = plain.column("label").to_numpy()
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.astype(np.int64)
    isolated = np.zeros(inputs.contacts, bool)
    if exact.num_rows:
        rows = pc.index_in(
            exact.column("contact_pid").cast(pa.binary(16)), value_set=inputs.pids
        ).to_numpy(zero_copy_only=False)
        rows = rows.astype(np.int64)
        parts = pa.table(
            {"component": exact.column("component"), "part": exact.column("part")}
        ).to_pandas()
        part_ids = parts.groupby(["component", "part"], sort=True).ngroup().to_numpy()
        labels[rows] = labels.max() + 1 + part_ids
        isolated[rows] = exact.column("isolated").to_numpy(zero_copy_only=False)
    return assign_pids(Generation(inputs, labels, isolated, "spark", details))
