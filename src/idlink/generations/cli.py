"""The generation commands of ``idlink``: ``export-records``, ``recluster`` and ``load``.

Registered by ``idlink.cli``; nothing heavy is imported until a command runs,
so ``idlink --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from idlink.service.options import DEFAULT_DATA


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``export-records``, ``recluster`` and ``load`` to the ``idlink`` command."""
    export = commands.add_parser(
        "export-records",
        help="write an account's records, key types and policies as Parquet (no contact "
        "values), also while a server runs",
    )
    export.add_argument("--data", default=DEFAULT_DATA, help="store folder")
    export.add_argument("--account", required=True)
    export.add_argument("--out", required=True, help="new or empty folder for the export")
    export.set_defaults(run=_export_records)

    recluster = commands.add_parser(
        "recluster",
        help="compute the customers of an export on an engine and write them as a generation",
    )
    recluster.add_argument("--engine", choices=["local", "duckdb", "spark"], default="local")
    recluster.add_argument("--in", dest="source", required=True, help="export folder")
    recluster.add_argument("--out", required=True, help="new or empty folder for the generation")
    recluster.add_argument(
        "--master", default=None, help="Spark master URL (spark engine; default local[*])"
    )
    recluster.add_argument(
        "--data",
        default=None,
        help="optional: refuse the export unless it is of --account of this store, "
        "made under its secret",
    )
    recluster.add_argument("--account", default=None, help="optional: the account expected")
    recluster.set_defaults(run=_recluster)

    load = commands.add_parser(
        "load",
        help="bulk-load a records file, or switch a generation in, without stopping the server",
    )
    load.add_argument("--data", default=DEFAULT_DATA, help="store folder")
    load.add_argument(
        "--account", default=None, help="the account (--records; --in: the generation's)"
    )
    source = load.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--records", default=None, help="records file, CSV or JSON Lines (as idlink ingest)"
    )
    source.add_argument(
        "--in", dest="generation", default=None, help="generation folder (idlink recluster)"
    )
    load.add_argument(
        "--export", default=None, help="the export the generation was computed from (--in)"
    )
    load.add_argument("--no-progress", action="store_true", help="no progress bar")
    load.set_defaults(run=_load)


def _export_records(args: argparse.Namespace) -> int:
    from idlink.errors import IdlinkError
    from idlink.generations.export import export_records

    try:
        manifest = export_records(args.data, args.account, args.out)
    except (OSError, ValueError, IdlinkError) as exc:
        print(f"export-records failed: {exc}", file=sys.stderr)
        return 1
    rows = {name.removesuffix(".parquet"): e.rows for name, e in manifest.files.items()}
    print(
        f"exported account {manifest.account} at change {manifest.change_seq} to {args.out}: "
        f"{rows['records']} records, {rows['contacts']} contacts, {rows['customers']} customers, "
        f"{rows['key_types']} key types, {rows['contact_policies']} contact policies"
    )
    return 0


def _recluster(args: argparse.Namespace) -> int:
    from idlink.errors import IdlinkError
    from idlink.generations.engines import recluster
    from idlink.generations.manifest import ExportError

    try:
        fingerprint = None
        if args.data is not None:
            fingerprint = _store_fingerprint(args.data, args.account)
        manifest = recluster(
            args.source,
            args.out,
            args.engine,
            master=args.master,
            account=args.account,
            fingerprint=fingerprint,
        )
    except (ExportError, OSError, ValueError, IdlinkError) as exc:
        print(f"recluster failed: {exc}", file=sys.stderr)
        return 1
    d = manifest.details
    rounds = f", {d['rounds']} rounds" if "rounds" in d else ""
    print(
        f"generation of account {manifest.account} (change {manifest.change_seq}) on "
        f"{args.engine}: {d['records']} records, {d['customers']} customers ({d['unchanged']} "
        f"unchanged, {d['updated']} updated, {d['merged']} merged, {d['split']} split, "
        f"{d['created']} created){rounds}, {d['replayed_components']} components replayed "
        f"exactly, {d['seconds']} s; written to {args.out}"
    )
    return 0


def _load(args: argparse.Namespace) -> int:
    from idlink.errors import IdlinkError
    from idlink.generations.load import run

    try:
        result = run(
            args.data,
            args.account,
            records=args.records,
            generation=args.generation,
            export=args.export,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, IdlinkError) as exc:
        print(f"load failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    report = result.switch
    assert report is not None
    events = ", ".join(f"{n} {kind}" for kind, n in sorted(report.events.items()))
    print(
        f"loaded account {result.account}: {result.records} records, {result.contacts} "
        f"contacts, {result.customers} customers; {result.rounds} catch-up rounds "
        f"({result.caught_up} records in the switch); change events {report.first_seq}.."
        f"{report.last_seq} ({events or 'none'}); {result.seconds['total']:.1f} s"
    )
    return 0


def _store_fingerprint(data: str, account: str | None) -> str:
    from idlink.domain.contacts import account_secret
    from idlink.generations.manifest import ExportError, secret_fingerprint
    from idlink.security.secrets import load_master_secret

    if not account:
        raise ExportError("--data needs --account: the account the export must be of")
    if not os.path.isfile(os.path.join(data, "data.mdb")):
        raise ExportError(f"no idlink store in {data}")
    return secret_fingerprint(account_secret(load_master_secret(data), account))
