"""Read records from CSV and JSON Lines files (the formats of ``idlink ingest``).

CSV: a header row, then one record per row.

- ``source`` and ``record_id`` (required): the record's key.
- ``observed_at`` (optional): RFC 3339 with an offset (``2024-05-01T09:30:00Z``)
  or epoch seconds (``1714555800``, decimals allowed); empty means the
  server's clock.
- ``deleted`` (optional): ``true``/``false``, ``1``/``0``, ``yes``/``no``; a
  deleted record needs no contacts.
- Every other column is a key type (``phone``, ``email``, ``id``, ``device``,
  ``crm_id``, ...). A cell may hold several values separated by ``|``; empty
  cells are skipped. A column ``<type>_source`` gives the source of that
  column's contacts (for source-scoped types such as ``id``); without it the
  record's source is used.
- Column names are matched case-insensitively; blank lines are skipped.

JSON Lines: one JSON object per line,
``{"source": "crm", "record_id": "42", "observed_at": "2024-05-01T09:30:00Z",
"contacts": [{"type": "phone", "value": "+1 555 123 4567"},
{"type": "id", "value": "CRM-42", "source": "salesforce"}], "deleted": false}``;
``observed_at``, ``deleted`` and a contact's ``source`` (default: the
record's source) are optional.

A file is JSON Lines when its name ends ``.jsonl``, ``.ndjson`` or ``.json``,
CSV when it ends ``.csv``, and otherwise JSON Lines when its first non-blank
character is ``{``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import common_pb2, identity_pb2

# Per record (docs/api.md, Link).
MAX_CONTACTS = 64
CSV_RESERVED = ("source", "record_id", "observed_at", "deleted")
JSON_RECORD_FIELDS = frozenset({"source", "record_id", "observed_at", "contacts", "deleted"})
JSON_CONTACT_FIELDS = frozenset({"type", "value", "source"})
KEY_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "n", "f"})


class BadLine(ValueError):
    """A line of the file that is not a valid record."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


# One parsed line: its number and its record, or the reason it is not one.
Parsed = tuple[int, identity_pb2.Record | None, str]


def detect_format(path: Path) -> str:
    """``"csv"`` or ``"jsonl"``, by extension, else by the first non-blank character."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        while chunk := handle.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return "jsonl" if stripped.startswith("{") else "csv"
    return "csv"


def read_records(path: Path, fmt: str | None = None) -> Iterator[Parsed]:
    """Parse a file: ``(line, record, "")`` per record, ``(line, None, why)`` per bad line."""
    fmt = fmt or detect_format(path)
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        try:
            if fmt == "jsonl":
                yield from _read_jsonl(handle)
            else:
                yield from _read_csv(handle)
        except UnicodeDecodeError as exc:
            yield 0, None, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"


def parse_time(value: Any, field: str = "observed_at") -> Timestamp | None:
    """RFC 3339 text with an offset, or epoch seconds; None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field} must be RFC 3339 text or epoch seconds, not {value!r}")
    seconds: float
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"{field} {text!r} is neither RFC 3339 (2024-05-01T09:30:00Z) nor epoch seconds"
                ) from None
            if moment.tzinfo is None:
                raise ValueError(
                    f"{field} {text!r} has no UTC offset "
                    "(RFC 3339 needs one, e.g. 2024-05-01T09:30:00Z)"
                ) from None
            seconds = moment.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:
        raise ValueError(f"{field} {value!r} is out of range (years 1970 to 9999)")
    stamp = Timestamp()
    whole = int(seconds)
    stamp.seconds = whole
    stamp.nanos = int(round((seconds - whole) * 1e6)) * 1000 % 1_000_000_000
    return stamp


def _record(
    source: str,
    record_id: str,
    contacts: list[common_pb2.ContactKey],
    observed_at: Timestamp | None,
    deleted: bool,
) -> identity_pb2.Record:
    if not source:
        raise ValueError("source is empty")
    if not record_id:
        raise ValueError("record_id is empty")
    if deleted:
        contacts = []
    elif not contacts:
        raise ValueError("the record has no contacts (and is not deleted)")
    elif len(contacts) > MAX_CONTACTS:
        raise ValueError(f"the record has {len(contacts)} contacts; at most {MAX_CONTACTS}")
    return identity_pb2.Record(
        source=source,
        record_id=record_id,
        contacts=contacts,
        observed_at=observed_at,
        deleted=deleted,
    )


def _parse_bool(value: str, field: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{field} {value!r} is not true/false, 1/0 or yes/no")


# --- CSV ---------------------------------------------------------------------------


def _read_csv(handle: io.TextIOBase) -> Iterator[Parsed]:
    reader = csv.reader(handle)
    header: list[str] | None = None
    columns: dict[str, int] = {}
    contact_columns: list[tuple[str, int, int | None]] = []
    previous_end = 0
    for row in reader:
        line = previous_end + 1
        previous_end = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = [name.strip().lower() for name in row]
            problem = _check_header(header)
            if problem:
                yield line, None, problem
                return
            columns = {name: i for i, name in enumerate(header)}
            for i, name in enumerate(header):
                if name in CSV_RESERVED or name.endswith("_source"):
                    continue
                contact_columns.append((name, i, columns.get(f"{name}_source")))
            continue
        if len(row) != len(header):
            yield line, None, f"{len(row)} cells, but the header has {len(header)} columns"
            continue
        try:
            yield line, _csv_record(row, columns, contact_columns), ""
        except ValueError as exc:
            yield line, None, str(exc)
    if header is None:
        yield 1, None, "the file is empty: a CSV file needs a header row"


def _check_header(header: list[str]) -> str:
    for required in ("source", "record_id"):
        if required not in header:
            return f"the header has no {required!r} column (columns: {', '.join(header)})"
    seen: set[str] = set()
    for name in header:
        if name in seen:
            return f"the header names column {name!r} twice"
        seen.add(name)
        if not KEY_TYPE_NAME.match(name.removesuffix("_source") or name):
            return (
                f"column {name!r} is not a key type name "
                "(a-z, 0-9 and _, starting with a letter, at most 32 characters)"
            )
    for name in header:
        if (
            name.endswith("_source")
            and name not in CSV_RESERVED
            and name.removesuffix("_source") not in seen
        ):
            return f"column {name!r} has no {name.removesuffix('_source')!r} column to go with"
    if not any(n not in CSV_RESERVED and not n.endswith("_source") for n in header):
        return "the header has no contact column (phone, email, id, device, ...)"
    return ""


def _csv_record(
    row: list[str], columns: dict[str, int], contact_columns: list[tuple[str, int, int | None]]
) -> identity_pb2.Record:
    source = row[columns["source"]].strip()
    record_id = row[columns["record_id"]].strip()
    observed_at = parse_time(row[columns["observed_at"]]) if "observed_at" in columns else None
    deleted = _parse_bool(row[columns["deleted"]], "deleted") if "deleted" in columns else False
    contacts: list[common_pb2.ContactKey] = []
    for key_type, index, source_index in contact_columns:
        contact_source = source
        if source_index is not None and row[source_index].strip():
            contact_source = row[source_index].strip()
        for value in row[index].split("|"):
            if value.strip():
                contacts.append(
                    common_pb2.ContactKey(type=key_type, value=value, source=contact_source)
                )
    return _record(source, record_id, contacts, observed_at, deleted)


# --- JSON Lines ------------------------------------------------------------------


def _read_jsonl(handle: io.TextIOBase) -> Iterator[Parsed]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, None, f"not valid JSON: {exc.msg} (column {exc.colno})"
            continue
        try:
            yield line, _json_record(data), ""
        except ValueError as exc:
            yield line, None, str(exc)


def _text(data: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{where}{key} must be a string, not {type(value).__name__}")
    return value.strip()


def _json_record(data: Any) -> identity_pb2.Record:
    if not isinstance(data, dict):
        raise ValueError(f"a record must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - JSON_RECORD_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(JSON_RECORD_FIELDS))})"
        )
    source = _text(data, "source", "")
    record_id = data.get("record_id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
        data = {**data, "record_id": record_id}
    record_id = _text(data, "record_id", "")
    observed_at = parse_time(data.get("observed_at"))
    deleted = data.get("deleted", False)
    if deleted is None:
        deleted = False
    if not isinstance(deleted, bool):
        raise ValueError(f"deleted must be true or false, not {deleted!r}")
    raw_contacts = data.get("contacts")
    if raw_contacts is None:
        raw_contacts = []
    if not isinstance(raw_contacts, list):
        raise ValueError("contacts must be a list of {type, value, source} objects")
    contacts: list[common_pb2.ContactKey] = []
    for i, item in enumerate(raw_contacts):
        where = f"contacts[{i}]."
        if not isinstance(item, dict):
            raise ValueError(f"contacts[{i}] must be an object with type and value")
        extra = sorted(set(item) - JSON_CONTACT_FIELDS)
        if extra:
            raise ValueError(f"{where}{extra[0]} is not a contact field (type, value, source)")
        key_type = _text(item, "type", where)
        value = item.get("value")
        if not isinstance(value, str):
            raise ValueError(f"{where}value must be a string")
        if not key_type:
            raise ValueError(f"{where}type is missing")
        contacts.append(
            common_pb2.ContactKey(
                type=key_type, value=value, source=_text(item, "source", where) or source
            )
        )
    return _record(source, record_id, contacts, observed_at, deleted)
