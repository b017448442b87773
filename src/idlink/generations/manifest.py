"""Manifests of exports and generations: what a folder holds, and the proof that it is whole.

An export (``idlink export-records``) and a generation (``idlink recluster``)
are folders of Parquet files and one ``manifest.json``, written last: a
folder without its manifest is a truncated export. The manifest names the
account, a fingerprint of the account secret (an HMAC of a fixed label keyed
by the secret, so it proves which secret made the contact PIDs without saying
anything about the secret), the store's change sequence number at export, and
for each file its row count, size and SHA-256. Every Parquet file also carries
the export id and the account in its own metadata, so a file copied in from
another export is named as such, not only as a checksum mismatch.

Reading checks all of it before any row is used (:func:`read_manifest`); each
refusal names the file (docs/scale-out.md, "Bad input").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idlink.errors import FailedPrecondition

MANIFEST_FILE = "manifest.json"
EXPORT_FORMAT = "idlink-export"
GENERATION_FORMAT = "idlink-generation"
FORMAT_VERSION = 1
# Keys of the Parquet key-value metadata every file of an export carries.
META_EXPORT_ID = b"idlink.export_id"
META_ACCOUNT = b"idlink.account"
META_TABLE = b"idlink.table"
_FINGERPRINT_LABEL = b"idlink export fingerprint\0"
_CHUNK = 1 << 20


class ExportError(FailedPrecondition):
    """An export or generation folder that is not whole, not ours, or not what was asked for."""

    reason = "EXPORT_INVALID"


def secret_fingerprint(account_secret: bytes) -> str:
    """Which secret made an export's contact PIDs: an HMAC of a fixed label, never the secret."""
    return hmac.new(account_secret, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(slots=True)
class FileEntry:
    """One file of a folder: rows, bytes and checksum as written."""

    rows: int
    bytes: int
    sha256: str


@dataclass(slots=True)
class Manifest:
    """The manifest of an export or a generation."""

    format: str
    export_id: str
    account: str
    secret_fingerprint: str
    # The store's change sequence number of the account when the export's read began.
    change_seq: int
    created_at_us: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    # Anything else the writer wants to say (engine, rounds, timings for a generation).
    details: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    # Where a load's catch-up starts (docs/operations.md, "Loading a generation"): the
    # account's record log sequence number when the export's read began, the account id
    # it read (a later load gives the name a new id) and its configuration version.
    # None in an export written before they were recorded (or a generation that does
    # not carry them on: give the load its export).
    record_log_seq: int | None = None
    account_id: int | None = None
    config_version: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self.format,
                "version": self.version,
                "export_id": self.export_id,
                "account": self.account,
                "secret_fingerprint": self.secret_fingerprint,
                "change_seq": self.change_seq,
                "created_at_us": self.created_at_us,
                "files": {
                    name: {"rows": e.rows, "bytes": e.bytes, "sha256": e.sha256}
                    for name, e in sorted(self.files.items())
                },
                "details": self.details,
                **{
                    name: value
                    for name, value in (
                        ("record_log_seq", self.record_log_seq),
                        ("account_id", self.account_id),
                        ("config_version", self.config_version),
                    )
                    if value is not None
                },
            },
            indent=2,
            sort_keys=True,
        )

    def add_file(self, folder: Path, name: str, rows: int) -> None:
        path = folder / name
        self.files[name] = FileEntry(rows, path.stat().st_size, sha256_of(path))


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write the manifest last and durably: its presence says the folder is whole."""
    for name in manifest.files:
        _fsync(folder / name)
    path = folder / MANIFEST_FILE
    temporary = folder / (MANIFEST_FILE + ".partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(manifest.to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _fsync(folder)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _required(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ExportError(f"{path}: {key!r} is missing or not a {kind.__name__}")
    return value


def _optional_int(raw: dict[str, Any], key: str, path: Path) -> int | None:
    if key not in raw:
        return None
    return int(_required(raw, key, int, path))


def read_manifest(folder: str | os.PathLike[str], expected_format: str) -> Manifest:
    """Read and check a folder's manifest and every file it lists (sizes, SHA-256).

    Raises :class:`ExportError` naming the file at fault: the manifest missing
    (a truncated folder), not JSON, of another format or version, or a listed
    file missing, of another size or checksum.
    """
    root = Path(folder)
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(
            f"{path} is missing: the folder is not a whole {expected_format} "
            "(the manifest is written last)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} cannot be read: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{path} is not a manifest (a JSON object)")
    found_format = raw.get("format")
    if found_format != expected_format:
        raise ExportError(f"{path} is a {found_format!r} manifest, not {expected_format!r}")
    if raw.get("version") != FORMAT_VERSION:
        raise ExportError(
            f"{path} has format version {raw.get('version')!r}; this idlink reads {FORMAT_VERSION}"
        )
    files_raw = _required(raw, "files", dict, path)
    files: dict[str, FileEntry] = {}
    for name, entry in files_raw.items():
        if not isinstance(entry, dict) or Path(name).name != name:
            raise ExportError(f"{path}: the entry for {name!r} is not a file of this folder")
        files[name] = FileEntry(
            _required(entry, "rows", int, path),
            _required(entry, "bytes", int, path),
            _required(entry, "sha256", str, path),
        )
    details = raw.get("details", {})
    manifest = Manifest(
        format=found_format,
        version=FORMAT_VERSION,
        export_id=_required(raw, "export_id", str, path),
        account=_required(raw, "account", str, path),
        secret_fingerprint=_required(raw, "secret_fingerprint", str, path),
        change_seq=_required(raw, "change_seq", int, path),
        created_at_us=_required(raw, "created_at_us", int, path),
        files=files,
        details=details if isinstance(details, dict) else {},
        record_log_seq=_optional_int(raw, "record_log_seq", path),
        account_id=_optional_int(raw, "account_id", path),
        config_version=_optional_int(raw, "config_version", path),
    )
    for name, entry in files.items():
        file_path = root / name
        try:
            size = file_path.stat().st_size
        except FileNotFoundError:
            raise ExportError(f"{file_path} is missing (listed in {path})") from None
        if size != entry.bytes:
            raise ExportError(
                f"{file_path} is {size} bytes, the manifest says {entry.bytes}: "
                "truncated or replaced"
            )
        if sha256_of(file_path) != entry.sha256:
            raise ExportError(
                f"{file_path} does not match its SHA-256 in {path}: damaged or replaced"
            )
    return manifest


def check_origin(
    manifest: Manifest,
    folder: str | os.PathLike[str],
    *,
    account: str | None = None,
    fingerprint: str | None = None,
) -> None:
    """Refuse a folder of another account, or whose PIDs another secret made."""
    path = Path(folder) / MANIFEST_FILE
    if account is not None and manifest.account != account:
        raise ExportError(f"{path} is an export of account {manifest.account!r}, not {account!r}")
    if fingerprint is not None and not hmac.compare_digest(
        manifest.secret_fingerprint, fingerprint
    ):
        raise ExportError(
            f"{path} was made under another account secret than this store's "
            "(its contact PIDs are not this store's)"
        )
