"""The ``idlink`` command: serve, keys, ingest, resolve, backup, check, compact (SPEC 10)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence

from idlink.service.options import DEFAULT_DATA, DEFAULT_LISTEN, add_serve_arguments


def _serve(args: argparse.Namespace) -> int:
    from idlink.service.server import run_from_args

    return run_from_args(args)


def _keys_create(args: argparse.Namespace) -> int:
    from idlink.security.apikeys import create_key

    token = create_key(args.data, args.account, args.role)
    print(token)
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    from idlink.security.crypto import open_store, rotate_key

    with open_store(args.data, multi_process=True) as store:
        counts = rotate_key(store, batch=args.batch_size)
    print(
        f"data key version {counts['version']} is current; sealed again: "
        f"{counts['contacts']} contacts, {counts['customers']} customers, "
        f"{counts['records']} records, {counts['engagements']} engagements"
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from idlink.client.ingest import ingest_file

    return ingest_file(args.target, args.token, args.account, args.file, batch_size=args.batch_size)


def _resolve(args: argparse.Namespace) -> int:
    from idlink.client.resolve import resolve_command

    return resolve_command(
        args.target, args.token, args.account, args.type, args.value, args.source, args.create
    )


# The LMDB files; everything else in a data folder (master.key, the data keys) is a key file.
_STORE_FILES = {"data.mdb", "lock.mdb"}


def _existing_store(data: str) -> str:
    if not os.path.isfile(os.path.join(data, "data.mdb")):
        raise ValueError(f"no idlink store in {data}")
    return data


def _backup(args: argparse.Namespace) -> int:
    """Copy the store with LMDB's consistent (compacting) copy, then the key files."""
    from idlink.errors import IdlinkError
    from idlink.security.crypto import open_store

    try:
        data = _existing_store(args.data)
        if os.path.exists(args.dest) and os.listdir(args.dest):
            raise ValueError(f"{args.dest} is not empty")
        # A second process may open the store while a server writes to it (LMDB
        # locking); the copy is one read transaction, a snapshot of one moment.
        with open_store(data, multi_process=True) as store:
            store.backup(args.dest, compact=True)
        # Keys are copied after the snapshot: keys are only ever added, so every
        # key the copy needs is in them.
        copied = ["data.mdb"]
        for name in sorted(os.listdir(data)):
            path = os.path.join(data, name)
            if name not in _STORE_FILES and os.path.isfile(path):
                shutil.copy2(path, os.path.join(args.dest, name))
                copied.append(name)
    except (OSError, ValueError, IdlinkError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup of {data} written to {args.dest}: {', '.join(copied)}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    """Rewrite the store without its free pages, in place (docs/operations.md, compaction)."""
    from idlink.errors import IdlinkError
    from idlink.store.env import compact_in_place

    try:
        data = _existing_store(args.data)
        before, after = compact_in_place(data)
    except (OSError, ValueError, IdlinkError) as exc:
        print(f"compact failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"compacted {data}: data.mdb {before / (1 << 20):.1f} MiB -> {after / (1 << 20):.1f} MiB; "
        "free pages dropped, the old file overwritten with zeros"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """Check every account's invariants; exit status 1 when there is any problem."""
    from idlink.domain.check import check_store
    from idlink.domain.engine import IdentityEngine
    from idlink.errors import IdlinkError
    from idlink.security.crypto import open_store
    from idlink.security.secrets import load_master_secret

    try:
        data = _existing_store(args.data)
        with open_store(data, multi_process=True) as store:
            reports = check_store(IdentityEngine(store, load_master_secret(data)))
    except (OSError, ValueError, IdlinkError) as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 2
    problems = 0
    for report in reports:
        state = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        print(
            f"account {report.account}: {report.contacts} contacts, {report.customers} customers, "
            f"{report.records} records: {state}"
        )
        for problem in report.problems:
            print(f"  {problem}")
        problems += len(report.problems)
    print("store ok" if not problems else f"store has {problems} problem(s)")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idlink", description="Customer identity service.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server on an embedded store")
    add_serve_arguments(serve)
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print its token once")
    create.add_argument("--data", default=DEFAULT_DATA)
    create.add_argument("--account", required=True)
    create.add_argument("--role", required=True, choices=["reader", "writer", "agent", "admin"])
    create.set_defaults(run=_keys_create)

    rotate = commands.add_parser(
        "rotate-key", help="add a data key version and seal stored values again (servers may run)"
    )
    rotate.add_argument("--data", default=DEFAULT_DATA)
    rotate.add_argument("--batch-size", type=int, default=500, help="values per write transaction")
    rotate.set_defaults(run=_rotate_key)

    ingest = commands.add_parser("ingest", help="stream a CSV or JSON Lines file of records")
    ingest.add_argument("--target", default=DEFAULT_LISTEN)
    ingest.add_argument("--token", default="")
    ingest.add_argument("--account", required=True)
    ingest.add_argument("--batch-size", type=int, default=500)
    ingest.add_argument("file")
    ingest.set_defaults(run=_ingest)

    resolve = commands.add_parser("resolve", help="look up one contact")
    resolve.add_argument("--target", default=DEFAULT_LISTEN)
    resolve.add_argument("--token", default="")
    resolve.add_argument("--account", required=True)
    resolve.add_argument("--source", default="")
    resolve.add_argument("--create", action="store_true", help="create the contact if it is new")
    resolve.add_argument("type")
    resolve.add_argument("value")
    resolve.set_defaults(run=_resolve)
    backup = commands.add_parser("backup", help="copy the store consistently, also while it serves")
    backup.add_argument("--data", default=DEFAULT_DATA, help="store folder")
    backup.add_argument("dest", help="new or empty folder for the copy")
    backup.set_defaults(run=_backup)

    check = commands.add_parser(
        "check", help="verify a store's invariants (exit status 1 on problems)"
    )
    check.add_argument("--data", default=DEFAULT_DATA, help="store folder")
    check.set_defaults(run=_check)

    compact = commands.add_parser(
        "compact",
        help="rewrite the store without its free pages, where erased values linger "
        "(the server must be stopped)",
    )
    compact.add_argument("--data", default=DEFAULT_DATA, help="store folder")
    compact.set_defaults(run=_compact)

    from idlink.generations.cli import register as register_generations

    register_generations(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
        stream=sys.stderr,
    )
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
