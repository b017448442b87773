"""Which engine computes a generation: ``idlink recluster`` end to end.

The engines (``local``, ``duckdb``, ``spark``) use what
:mod:`idlink.generations.recluster` shares; this module picks one, runs it on
a checked export and writes the generation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from idlink.generations.export import open_export
from idlink.generations.manifest import ExportError, Manifest
from idlink.generations.recluster import Generation, finish, load_inputs, write_generation

ENGINES = ("local", "duckdb", "spark")


def compute(
    export_path: str | os.PathLike[str],
    engine: str,
    *,
    master: str | None = None,
    account: str | None = None,
    fingerprint: str | None = None,
) -> Generation:
    """Compute the generation of an export on an engine (nothing is written)."""
    if engine not in ENGINES:
        raise ExportError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    started = time.perf_counter()
    export = open_export(export_path, account=account, fingerprint=fingerprint)
    inputs = load_inputs(export)
    details: dict[str, Any] = {
        "records": int(len(inputs.live_records)),
        "contacts": inputs.contacts,
        "load_seconds": round(time.perf_counter() - started, 3),
    }
    if engine == "spark":
        from idlink.generations import spark_engine

        return spark_engine.run(inputs, details, master=master)
    begun = time.perf_counter()
    if engine == "duckdb":
        from idlink.generations import duckdb_engine

        labels = duckdb_engine.components(inputs, details)
    else:
        from idlink.generations import local

        labels = local.components(inputs, details)
    details["components_seconds"] = round(time.perf_counter() - begun, 3)
    return finish(inputs, labels, engine, details)


def recluster(
    export_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    engine: str,
    *,
    master: str | None = None,
    account: str | None = None,
    fingerprint: str | None = None,
) -> Manifest:
    """Compute and write the generation of an export (``idlink recluster``)."""
    out_path = Path(out)
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise ExportError(
            f"{out_path} is not an empty folder: a generation is written into a new one"
        )
    started = time.perf_counter()
    generation = compute(
        export_path, engine, master=master, account=account, fingerprint=fingerprint
    )
    generation.details["seconds"] = round(time.perf_counter() - started, 3)
    return write_generation(generation, out_path)
