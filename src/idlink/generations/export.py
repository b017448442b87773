"""``idlink export-records``: an account's records and linking inputs as Parquet, no values.

What re-clustering needs and nothing more (docs/scale-out.md), one file per table:

- ``records``: source, record_id, observed_at_us, deleted, and contacts
  (contact_pid, type, source) in the record's order;
- ``contacts``: contact_pid, type, source, invalid_reason, blocked,
  customer_pid (its customer now), first_seen (the arrival counter);
- ``customers``: customer_pid, created_seq, contact_pids (the customers now);
- ``key_types``: name, normalizer, source_scoped, max_per_customer,
  reassignable, anonymous, priority, blocked_values, blocked_patterns;
- ``contact_policies``: contact_pid, do_not_link, never_isolate, set_by, set_at_us;
- ``account_policy``: max_contacts, isolate_min_connections (one row).

Contact values are not written: linking works on contact PIDs, and what it
needs of a value (invalid, blocked by the key type's blocked values) is
written as a verdict. The export is one read transaction, so it is one moment
of the store, also while a server writes to it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from idlink.domain.keytypes import AccountConfig, KeyType
from idlink.generations.manifest import (
    EXPORT_FORMAT,
    META_ACCOUNT,
    META_EXPORT_ID,
    META_TABLE,
    ExportError,
    Manifest,
    check_origin,
    read_manifest,
    secret_fingerprint,
    write_manifest,
)

PID = pa.binary()
RECORD_CONTACT = pa.struct([("contact_pid", PID), ("type", pa.string()), ("source", pa.string())])
SCHEMAS: dict[str, pa.Schema] = {
    "records": pa.schema(
        [
            ("source", pa.string()),
            ("record_id", pa.string()),
            ("observed_at_us", pa.int64()),
            ("deleted", pa.bool_()),
            ("contacts", pa.list_(RECORD_CONTACT)),
        ]
    ),
    "contacts": pa.schema(
        [
            ("contact_pid", PID),
            ("type", pa.string()),
            ("source", pa.string()),
            ("invalid_reason", pa.string()),
            ("blocked", pa.bool_()),
            ("customer_pid", PID),
            ("first_seen", pa.int64()),
        ]
    ),
    "customers": pa.schema(
        [
            ("customer_pid", PID),
            ("created_seq", pa.int64()),
            ("contact_pids", pa.list_(PID)),
        ]
    ),
    "key_types": pa.schema(
        [
            ("name", pa.string()),
            ("normalizer", pa.int32()),
            ("source_scoped", pa.bool_()),
            ("max_per_customer", pa.int64()),
            ("reassignable", pa.bool_()),
            ("anonymous", pa.bool_()),
            ("priority", pa.int64()),
            ("blocked_values", pa.list_(pa.string())),
            ("blocked_patterns", pa.list_(pa.string())),
        ]
    ),
    "contact_policies": pa.schema(
        [
            ("contact_pid", PID),
            ("do_not_link", pa.bool_()),
            ("never_isolate", pa.bool_()),
            ("set_by", pa.string()),
            ("set_at_us", pa.int64()),
        ]
    ),
    "account_policy": pa.schema(
        [("max_contacts", pa.int64()), ("isolate_min_connections", pa.int64())]
    ),
}
TABLES = tuple(SCHEMAS)
BATCH_ROWS = 65536


def file_name(table: str) -> str:
    return f"{table}.parquet"


class _TableWriter:
    """Rows of one table written in batches, so an account of any size fits in memory."""

    def __init__(self, folder: Path, table: str, metadata: dict[bytes, bytes]) -> None:
        self.table = table
        self.schema = SCHEMAS[table].with_metadata({**metadata, META_TABLE: table.encode()})
        self.path = folder / file_name(table)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._sink = os.fdopen(fd, "wb")
        self._writer = pq.ParquetWriter(self._sink, self.schema)
        self._rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self.count += len(self._rows)
            self._rows = []

    def close(self) -> int:
        self._flush()
        self._writer.close()
        self._sink.close()
        return self.count


def _prepare_folder(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            raise ExportError(f"{out} is not empty: an export is written into a new folder")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)


def export_records(
    data: str | os.PathLike[str], account: str, out: str | os.PathLike[str]
) -> Manifest:
    """Export one account of the store in ``data`` into the new folder ``out``."""
    from idlink.domain.engine import IdentityEngine
    from idlink.errors import NotFound
    from idlink.security.crypto import open_store
    from idlink.security.secrets import load_master_secret

    data_path = Path(data)
    if not (data_path / "data.mdb").is_file():
        raise ExportError(f"no idlink store in {data_path}")
    out_path = Path(out)
    _prepare_folder(out_path)
    # Shared with a running server, as `idlink check` and `idlink backup` are.
    with open_store(data_path, multi_process=True) as store:
        engine = IdentityEngine(store, load_master_secret(data_path))
        with account_reader(engine, account) as reader:
            if reader is None:
                raise NotFound(f"account {account!r} has nothing in {data_path}", field="account")
            manifest = Manifest(
                format=EXPORT_FORMAT,
                export_id=uuid.uuid4().hex,
                account=account,
                secret_fingerprint=secret_fingerprint(engine.secret(account)),
                change_seq=reader.change_seq(),
                created_at_us=time.time_ns() // 1000,
                record_log_seq=int(reader.txn.record_log_seq()),
                account_id=int(reader.txn.account_id),
                config_version=int(reader.txn.config_version()),
            )
            metadata = {META_EXPORT_ID: manifest.export_id.encode(), META_ACCOUNT: account.encode()}
            for table, rows in _account_rows(reader).items():
                writer = _TableWriter(out_path, table, metadata)
                try:
                    for row in rows:
                        writer.add(row)
                finally:
                    count = writer.close()
                manifest.add_file(out_path, file_name(table), count)
    write_manifest(out_path, manifest)
    return manifest


def write_export(
    out: str | os.PathLike[str],
    *,
    account: str,
    fingerprint: str,
    change_seq: int,
    tables: dict[str, pa.Table],
    record_log_seq: int | None = None,
    account_id: int | None = None,
    config_version: int | None = None,
) -> Manifest:
    """Write an export from tables already in memory (records of a file, a benchmark's set)."""
    out_path = Path(out)
    _prepare_folder(out_path)
    manifest = Manifest(
        format=EXPORT_FORMAT,
        export_id=uuid.uuid4().hex,
        account=account,
        secret_fingerprint=fingerprint,
        change_seq=change_seq,
        created_at_us=time.time_ns() // 1000,
        record_log_seq=record_log_seq,
        account_id=account_id,
        config_version=config_version,
    )
    metadata = {META_EXPORT_ID: manifest.export_id.encode(), META_ACCOUNT: account.encode()}
    for table in TABLES:
        schema = SCHEMAS[table].with_metadata({**metadata, META_TABLE: table.encode()})
        found = tables.get(table)
        data = pa.Table.from_pylist([], schema=schema) if found is None else found.cast(schema)
        path = out_path / file_name(table)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as sink:
            pq.write_table(data, sink)
        manifest.add_file(out_path, file_name(table), data.num_rows)
    write_manifest(out_path, manifest)
    return manifest


class AccountReader:
    """What an export reads of one account, in one read transaction of the engine."""

    def __init__(self, txn: Any, config: AccountConfig, has_policies: bool) -> None:
        self.txn = txn  # the account's part of the transaction (store.txn.AccountTxn)
        self.config = config
        self.has_policies = has_policies

    def change_seq(self) -> int:
        return int(self.txn.change_seq())


@contextmanager
def account_reader(engine: Any, account: str) -> Iterator[AccountReader | None]:
    """One account of the engine through its read front door; None for an unknown account."""
    with engine.read(account) as view:
        yield AccountReader(view.txn, view.config, view.has_policies) if view.exists else None


def _account_rows(reader: AccountReader) -> dict[str, Iterable[dict[str, Any]]]:
    txn, config = reader.txn, reader.config
    types: dict[str, KeyType] = config.key_types
    policies: list[dict[str, Any]] = []

    def records() -> Iterator[dict[str, Any]]:
        contact_cache: dict[bytes, tuple[str, str]] = {}
        for record in txn.iter_records():
            entries = []
            for pid in record.contact_pids:
                found = contact_cache.get(pid)
                if found is None:
                    contact = txn.get_contact(pid)
                    found = (contact.type, contact.source) if contact is not None else ("", "")
                    if len(contact_cache) < 1 << 20:
                        contact_cache[pid] = found
                entries.append({"contact_pid": pid, "type": found[0], "source": found[1]})
            yield {
                "source": record.source,
                "record_id": record.record_id,
                "observed_at_us": record.observed_at_us,
                "deleted": False,
                "contacts": entries,
            }

    def contacts() -> Iterator[dict[str, Any]]:
        for pid, contact in txn.iter_contacts():
            key_type = types.get(contact.type)
            # The blocked verdict of the key types in force (contacts.unusable_reason):
            # the value itself stays in the store.
            blocked = key_type is not None and key_type.is_blocked(contact.value)
            if reader.has_policies:
                policy = txn.get_policy(pid)
                if policy is not None:
                    policies.append(
                        {
                            "contact_pid": pid,
                            "do_not_link": policy.do_not_link,
                            "never_isolate": policy.never_isolate,
                            "set_by": policy.set_by,
                            "set_at_us": policy.set_at_us,
                        }
                    )
            yield {
                "contact_pid": pid,
                "type": contact.type,
                "source": contact.source,
                "invalid_reason": contact.invalid_reason,
                "blocked": blocked,
                "customer_pid": contact.customer_pid,
                "first_seen": contact.first_seen,
            }

    def customers() -> Iterator[dict[str, Any]]:
        for pid, customer in txn.iter_customers():
            yield {
                "customer_pid": pid,
                "created_seq": customer.created_seq,
                "contact_pids": list(customer.contact_pids),
            }

    key_types = key_type_rows(types.values())
    policy = [
        {
            "max_contacts": config.policy.max_contacts,
            "isolate_min_connections": config.policy.isolate_min_connections,
        }
    ]
    # contacts before contact_policies: the policies are gathered while contacts are read.
    return {
        "records": records(),
        "contacts": contacts(),
        "customers": customers(),
        "key_types": key_types,
        "contact_policies": policies,
        "account_policy": policy,
    }


@dataclass(slots=True)
class Export:
    """An export read back and checked: its manifest and its tables."""

    path: Path
    manifest: Manifest
    tables: dict[str, pa.Table]

    def __getitem__(self, table: str) -> pa.Table:
        return self.tables[table]


def open_export(
    path: str | os.PathLike[str],
    *,
    account: str | None = None,
    fingerprint: str | None = None,
    read: bool = True,
) -> Export:
    """Check an export (manifest, checksums, origin, schemas, row counts) and read its tables.

    With ``read=False`` only the checks run and no table is loaded (an engine
    that reads the files itself, such as Spark). Every refusal is an
    :class:`ExportError` that names the file.
    """
    root = Path(path)
    manifest = read_manifest(root, EXPORT_FORMAT)
    check_origin(manifest, root, account=account, fingerprint=fingerprint)
    tables: dict[str, pa.Table] = {}
    for table in TABLES:
        name = file_name(table)
        file_path = root / name
        if name not in manifest.files:
            raise ExportError(f"{file_path} is not in the manifest: the export is not whole")
        try:
            parquet = pq.ParquetFile(file_path)
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(f"{file_path} is not a Parquet file: {exc}") from None
        meta = parquet.schema_arrow.metadata or {}
        if (
            meta.get(META_EXPORT_ID) != manifest.export_id.encode()
            or meta.get(META_ACCOUNT) != manifest.account.encode()
        ):
            raise ExportError(
                f"{file_path} belongs to another export (account "
                f"{meta.get(META_ACCOUNT, b'?').decode(errors='replace')!r}), "
                f"not to {manifest.export_id} of account {manifest.account!r}"
            )
        expected = SCHEMAS[table]
        found = parquet.schema_arrow.remove_metadata()
        if not found.equals(expected):
            raise ExportError(f"{file_path} does not have the columns of {table}: {found}")
        rows = parquet.metadata.num_rows
        if rows != manifest.files[name].rows:
            raise ExportError(
                f"{file_path} has {rows} rows, the manifest says {manifest.files[name].rows}"
            )
        if read:
            tables[table] = parquet.read().replace_schema_metadata(None)
    if read and tables["account_policy"].num_rows != 1:
        raise ExportError(f"{root / file_name('account_policy')} must have exactly one row")
    return Export(root, manifest, tables)


def key_type_rows(key_types: Iterable[KeyType]) -> list[dict[str, Any]]:
    """The rows of ``key_types.parquet``: every key type, by name."""
    return [
        {
            "name": k.name,
            "normalizer": k.normalizer,
            "source_scoped": k.source_scoped,
            "max_per_customer": k.max_per_customer,
            "reassignable": k.reassignable,
            "anonymous": k.anonymous,
            "priority": k.priority,
            "blocked_values": list(k.blocked_values),
            "blocked_patterns": list(k.blocked_patterns),
        }
        for k in sorted(key_types, key=lambda k: k.name)
    ]
