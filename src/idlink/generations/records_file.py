"""A records file read for ``idlink load --records``: parsed, checked and hashed in batches.

The formats are those of ``idlink ingest`` (:mod:`idlink.client.records`, whose
header, time and boolean rules are reused here). CSV is read with a plain
``csv.reader`` straight into columns, without building a message per row;
JSON Lines goes through the client's own parser. Every refusal names the file
and the line, and happens before anything is written:

- a line that is not a record (the client's rules);
- a source or record id the engine refuses (``records.check_record``), a
  contact of a key type the account does not have (``UNKNOWN_KEY_TYPE``, as
  ``Ingest`` answers), a source-scoped contact without a valid source, a value
  longer than the engine takes.

Contacts are cleaned, validated and hashed per (key type, source) with the
compiled ``_contacts.prepare_many`` (one call per group, each distinct raw
value once), then marked BLOCKED by the key type's blocked values, exactly as
``domain.contacts.prepare_contact`` does for one contact.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from idlink._native import _contacts
from idlink.client.records import (
    CSV_RESERVED,
    FALSE_WORDS,
    TRUE_WORDS,
    _check_header,
    _parse_bool,
    detect_format,
    parse_time,
    read_records,
)
from idlink.domain.contacts import BLOCKED, MAX_RAW_VALUE_BYTES, MAX_SOURCE_BYTES
from idlink.domain.keytypes import AccountConfig, KeyType
from idlink.domain.patterns import compile_blocked
from idlink.domain.records import MAX_CONTACTS_PER_RECORD, MAX_RECORD_ID_BYTES
from idlink.errors import InvalidArgument
from idlink.text import check_text


class RecordsFileError(InvalidArgument):
    """A records file that cannot be loaded: the message names the file and the line."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        where = f"{path}: line {line}" if line else str(path)
        super().__init__(f"{where}: {message}", field="records", reason="BAD_RECORDS_FILE")
        self.path = path
        self.line = line


@dataclass(slots=True)
class ParsedFile:
    """The records of a file as columns; entries are the records' contacts, flattened."""

    path: Path
    line: list[int] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    record_id: list[str] = field(default_factory=list)
    observed_at_us: list[int | None] = field(default_factory=list)
    deleted: list[bool] = field(default_factory=list)
    # entry -> its record's row, key type, contact source, raw value
    entry_record: list[int] = field(default_factory=list)
    entry_type: list[str] = field(default_factory=list)
    entry_source: list[str] = field(default_factory=list)
    entry_value: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.line)


@dataclass(slots=True)
class PreparedEntries:
    """Each entry cleaned, validated and hashed: what ``prepare_contact`` gives, as columns."""

    key_type: list[KeyType]
    source: list[str]  # "" for types that are not source-scoped
    cleaned: list[str]
    invalid_reason: list[str]  # BLOCKED included, as PreparedContact has it
    pid: list[bytes]


_MAX_SECONDS = 253402300800  # parse_time's range: years 1970 to 9999


def _timestamp_us(value: str | None) -> int | None:
    """``parse_time`` in microseconds; epoch seconds take a short path with its exact rounding."""
    if value:
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds) and 0 <= seconds < _MAX_SECONDS:
                whole = int(seconds)
                nanos = int(round((seconds - whole) * 1e6)) * 1000 % 1_000_000_000
                return whole * 1_000_000 + nanos // 1000
    stamp = parse_time(value)
    if stamp is None:
        return None
    return int(stamp.seconds) * 1_000_000 + int(stamp.nanos) // 1000


def parse_file(path: Path) -> ParsedFile:
    """Read every record of a CSV or JSON Lines file; the first bad line is refused."""
    if not path.is_file():
        raise RecordsFileError(path, 0, "no such file")
    fmt = detect_format(path)
    parsed = ParsedFile(path)
    try:
        if fmt == "csv":
            if not _read_csv_columns(path, parsed):
                _read_csv(path, parsed)
        else:
            _read_jsonl(path, parsed)
    except UnicodeDecodeError as exc:
        raise RecordsFileError(
            path, 0, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    return parsed


def _plain(text: str, max_bytes: int) -> bool:
    """Printable ASCII within the limit: what ``check_text`` accepts, decided at C speed."""
    return 0 < len(text) <= max_bytes and text.isascii() and text.isprintable()


def _add_record(
    parsed: ParsedFile,
    line: int,
    source: str,
    record_id: str,
    observed: int | None,
    deleted: bool,
    contacts: list[tuple[str, str, str]],
) -> None:
    path = parsed.path
    if not source:
        raise RecordsFileError(path, line, "source is empty")
    if not record_id:
        raise RecordsFileError(path, line, "record_id is empty")
    if deleted:
        contacts = []
    elif not contacts:
        raise RecordsFileError(path, line, "the record has no contacts (and is not deleted)")
    elif len(contacts) > MAX_CONTACTS_PER_RECORD:
        raise RecordsFileError(
            path,
            line,
            f"the record has {len(contacts)} contacts; at most {MAX_CONTACTS_PER_RECORD}",
        )
    if not (_plain(source, MAX_SOURCE_BYTES) and _plain(record_id, MAX_RECORD_ID_BYTES)):
        try:
            check_text(source, "source", MAX_SOURCE_BYTES)
            check_text(record_id, "record_id", MAX_RECORD_ID_BYTES)
        except InvalidArgument as exc:
            raise RecordsFileError(path, line, exc.message) from None
    row = len(parsed.line)
    parsed.line.append(line)
    parsed.source.append(source)
    parsed.record_id.append(record_id)
    parsed.observed_at_us.append(observed)
    parsed.deleted.append(deleted)
    for key_type, contact_source, value in contacts:
        parsed.entry_record.append(row)
        parsed.entry_type.append(key_type)
        parsed.entry_source.append(contact_source)
        parsed.entry_value.append(value)


def _read_csv(path: Path, parsed: ParsedFile) -> None:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        contact_columns: list[tuple[str, int, int | None]] = []
        source_at = record_at = observed_at = deleted_at = -1
        width = 0
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
                    raise RecordsFileError(path, line, problem)
                columns = {name: i for i, name in enumerate(header)}
                for i, name in enumerate(header):
                    if name in CSV_RESERVED or name.endswith("_source"):
                        continue
                    contact_columns.append((name, i, columns.get(f"{name}_source")))
                source_at, record_at = columns["source"], columns["record_id"]
                observed_at = columns.get("observed_at", -1)
                deleted_at = columns.get("deleted", -1)
                width = len(header)
                continue
            if len(row) != width:
                raise RecordsFileError(
                    path, line, f"{len(row)} cells, but the header has {width} columns"
                )
            source = row[source_at].strip()
            try:
                observed = _timestamp_us(row[observed_at]) if observed_at >= 0 else None
                deleted = _parse_bool(row[deleted_at], "deleted") if deleted_at >= 0 else False
            except ValueError as exc:
                raise RecordsFileError(path, line, str(exc)) from None
            contacts: list[tuple[str, str, str]] = []
            for key_type, index, source_index in contact_columns:
                cell = row[index]
                if not cell:
                    continue
                contact_source = source
                if source_index is not None:
                    given = row[source_index].strip()
                    if given:
                        contact_source = given
                for value in cell.split("|"):
                    if value.strip():
                        contacts.append((key_type, contact_source, value))
            _add_record(parsed, line, source, row[record_at].strip(), observed, deleted, contacts)
        if header is None:
            raise RecordsFileError(path, 1, "the file is empty: a CSV file needs a header row")


# The bytes the whole-column reader takes (anything else is left to csv.reader): printable
# ASCII but the quote (csv.reader's quoting rules), tab, LF and CR (only before LF). On
# this alphabet str.strip and Arrow's whitespace trim agree: both strip spaces and tabs.
_COLUMNAR_BYTES = bytes(b for b in range(0x20, 0x7F) if b != ord('"')) + b"\t\n\r"
# Epoch seconds Arrow casts to the double float() gives (other texts go through _timestamp_us).
_PLAIN_SECONDS = r"^(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_BOM = b"\xef\xbb\xbf"
# Arrow reads the file in blocks of this size, in parallel: the columns come in chunks.
_BLOCK_BYTES = 1 << 20


def _read_csv_columns(path: Path, parsed: ParsedFile) -> bool:
    """The common CSV file read by Arrow's reader in whole columns; False to use csv.reader.

    Taken only when the result is sure to be the line-by-line reader's: no
    quotes, only printable ASCII and tabs, no blank or continued lines (so
    record i is on line i + 2), every cell count equal to the header's, and
    nothing to refuse (an empty source or record id, a record without
    contacts or with too many, a source or record id ``check_text`` would
    look at, a ``deleted`` that is not a boolean word). Anything else returns
    False before ``parsed`` is touched, and ``_read_csv`` reads the file and
    names the first bad line.
    """
    import pyarrow.csv as pacsv

    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if (
        not data
        or data.translate(None, _COLUMNAR_BYTES)
        or data.count(b"\r") != data.count(b"\r\n")
    ):
        return False
    header_end = data.find(b"\n")
    first = data if header_end < 0 else data[:header_end]
    header = [name.strip().lower() for name in first.decode().rstrip("\r").split(",")]
    if all(not name for name in header) or _check_header(header):
        return False
    if header_end < 0 or header_end + 1 == len(data):
        return True  # a header and no records
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    width = len(header)
    names = [f"c{i}" for i in range(width)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1, use_threads=True, block_size=_BLOCK_BYTES
            ),
            parse_options=pacsv.ParseOptions(
                quote_char=False, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError):
        return False
    del data
    count = table.num_rows
    if count != lines - 1:
        return False  # a blank line, or one more line than rows
    column = [table.column(i) for i in range(width)]
    del table
    at = {name: i for i, name in enumerate(header)}
    # A row of blank cells (csv.reader skips it) has an empty source: refused below.
    source = pc.utf8_trim_whitespace(column[at["source"]])
    record_id = pc.utf8_trim_whitespace(column[at["record_id"]])
    for text, most in ((source, MAX_SOURCE_BYTES), (record_id, MAX_RECORD_ID_BYTES)):
        length = pc.utf8_length(text)
        if count and (
            pc.min(length).as_py() < 1
            or pc.max(length).as_py() > most
            or pc.any(pc.match_substring(text, "\t")).as_py()
        ):
            return False  # _add_record refuses, or check_text decides
    deleted = np.zeros(count, bool)
    if "deleted" in at:
        word = pc.utf8_lower(pc.utf8_trim_whitespace(column[at["deleted"]]))
        yes = pc.is_in(word, value_set=pa.array(sorted(TRUE_WORDS)))
        no = pc.is_in(word, value_set=pa.array(sorted(FALSE_WORDS)))
        if count and not pc.all(pc.or_(yes, no)).as_py():
            return False
        deleted = yes.to_numpy(zero_copy_only=False).astype(bool)
    observed: list[int | None] = [None] * count
    if "observed_at" in at:
        try:
            observed = _observed_column(column[at["observed_at"]])
        except ValueError:
            return False  # a time ingest refuses: _read_csv names its line

    # Entries: per record, each contact column in header order, each "|" part in its order.
    sources_py: list[str] = source.to_pylist()
    part_record: list[np.ndarray] = []
    part_column: list[np.ndarray] = []
    part_value: list[pa.Array] = []
    part_source: list[pa.Array] = []
    type_names: list[str] = []
    for name, index, source_index in _contact_columns(header, at):
        cells = column[index]
        split = pc.split_pattern(cells, "|")
        rows = np.repeat(
            np.arange(count, dtype=np.int64),
            pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64),
        )
        values = pc.list_flatten(split)
        keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)
        keep_np = keep.to_numpy(zero_copy_only=False).astype(bool) & ~deleted[rows]
        rows = rows[keep_np]
        contact_source = source
        if source_index is not None:
            given = pc.utf8_trim_whitespace(column[source_index])
            contact_source = pc.if_else(pc.greater(pc.utf8_length(given), 0), given, source)
        part_record.append(rows)
        part_column.append(np.full(len(rows), len(type_names), np.int64))
        part_value.append(values.filter(pa.array(keep_np)))
        part_source.append(contact_source.take(pa.array(rows)))
        type_names.append(name)
    entry_record = np.concatenate(part_record) if part_record else np.empty(0, np.int64)
    entry_column = np.concatenate(part_column) if part_column else np.empty(0, np.int64)
    order = np.lexsort((entry_column, entry_record))  # stable: parts keep their order
    per_record = np.bincount(entry_record, minlength=count)
    if count and (
        (per_record[~deleted] == 0).any() or per_record.max(initial=0) > MAX_CONTACTS_PER_RECORD
    ):
        return False  # no contacts, or too many: _add_record names the line
    order_arrow = pa.array(order)
    entry_values = _chunks(part_value).take(order_arrow)
    names_column = np.empty(len(type_names), object)
    names_column[:] = type_names
    parsed.line = list(range(2, count + 2))
    parsed.source = sources_py
    parsed.record_id = record_id.to_pylist()
    parsed.observed_at_us = observed
    parsed.deleted = deleted.tolist()
    parsed.entry_record = entry_record[order].tolist()
    parsed.entry_type = names_column[entry_column[order]].tolist()
    if any(source_index is not None for _, _, source_index in _contact_columns(header, at)):
        parsed.entry_source = _chunks(part_source).take(order_arrow).to_pylist()
    else:  # each entry's source is its record's: the same string objects, not copies
        record_sources = np.empty(count, object)
        record_sources[:] = sources_py
        parsed.entry_source = record_sources[parsed.entry_record].tolist() if count else []
    parsed.entry_value = entry_values.to_pylist()
    del column, source, record_id, part_value, part_source, entry_values, order_arrow
    # Arrow's pool keeps the file's buffers for reuse: give them back before the merge.
    pa.default_memory_pool().release_unused()
    return True


def _chunks(parts: list[Any]) -> pa.ChunkedArray:
    """Arrays and chunked arrays of strings, end to end, as one chunked array."""
    chunks: list[pa.Array] = []
    for part in parts:
        chunks.extend(part.chunks if isinstance(part, pa.ChunkedArray) else [part])
    return pa.chunked_array(chunks, pa.string())


def _contact_columns(header: list[str], at: dict[str, int]) -> list[tuple[str, int, int | None]]:
    return [
        (name, i, at.get(f"{name}_source"))
        for i, name in enumerate(header)
        if not (name in CSV_RESERVED or name.endswith("_source"))
    ]


def _observed_column(cells: Any) -> list[int | None]:
    """``_timestamp_us`` of each cell: plain epoch seconds in whole columns, the rest one by one."""
    plain = pc.match_substring_regex(cells, _PLAIN_SECONDS).to_numpy(zero_copy_only=False)
    plain = plain.astype(bool)
    seconds = pc.cast(cells.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    ok = np.isfinite(seconds) & (seconds >= 0) & (seconds < _MAX_SECONDS)
    whole = np.trunc(seconds[ok])
    # int(round((seconds - whole) * 1e6)) * 1000 % 1e9 // 1000, as _timestamp_us computes it
    micros = np.rint((seconds[ok] - whole) * 1e6).astype(np.int64) % 1_000_000
    stamps = whole.astype(np.int64) * 1_000_000 + micros
    out: list[int | None] = [None] * len(cells)
    plain_rows = np.flatnonzero(plain)
    for row, value in zip(plain_rows[ok].tolist(), stamps.tolist(), strict=True):
        out[row] = value
    done = np.zeros(len(cells), bool)
    done[plain_rows[ok]] = True
    rest = np.flatnonzero(~done).tolist()
    if rest:
        texts = cells.take(pa.array(rest, pa.int64())).to_pylist()
        for row, text in zip(rest, texts, strict=True):
            out[row] = _timestamp_us(text)  # raises ValueError: the caller goes line by line
    return out


def _read_jsonl(path: Path, parsed: ParsedFile) -> None:
    for line, record, problem in read_records(path, "jsonl"):
        if record is None:
            raise RecordsFileError(path, line, problem)
        observed = None
        if record.HasField("observed_at"):
            observed = record.observed_at.seconds * 1_000_000 + record.observed_at.nanos // 1000
        contacts = [(c.type, c.source, c.value) for c in record.contacts]
        _add_record(
            parsed, line, record.source, record.record_id, observed, record.deleted, contacts
        )


def prepare_entries(parsed: ParsedFile, config: AccountConfig, secret: bytes) -> PreparedEntries:
    """Clean, validate and hash every entry of the file, in batches per (key type, source).

    The entries are grouped and their distinct values found with whole-column
    operations; a file with anything to refuse (an unknown key type, a bad
    source, a value too long or not UTF-8) goes through the entry-by-entry
    path instead, which names the first such entry in file order.
    """
    fast = _prepare_columns(parsed, config, secret)
    if fast is not None:
        return fast
    return _prepare_one_by_one(parsed, config, secret)


def _prepare_group(
    secret: bytes, key_type: KeyType, source: str, values: list[str]
) -> list[tuple[str, str, bytes]]:
    """prepare_many over distinct values, then the key type's blocked values marked."""
    prepared = _contacts.prepare_many(secret, key_type.normalizer, key_type.name, source, values)
    return _mark_blocked(key_type, prepared)


def _mark_blocked(
    key_type: KeyType, prepared: list[tuple[str, str, bytes]]
) -> list[tuple[str, str, bytes]]:
    """BLOCKED for the valid values ``key_type.is_blocked`` blocks, the patterns run in batch."""
    if not (key_type.blocked_values or key_type.blocked_patterns):
        return prepared  # nothing can be blocked
    valid = [i for i, (_, reason, _) in enumerate(prepared) if not reason]
    cleaned = [prepared[i][0] for i in valid]
    blocked_values = frozenset(key_type.blocked_values)
    hits = (
        compile_blocked(key_type.blocked_patterns).search_many(cleaned)
        if key_type.blocked_patterns
        else [False] * len(cleaned)
    )
    out = list(prepared)
    for i, value, hit in zip(valid, cleaned, hits, strict=True):
        if hit or value in blocked_values:
            out[i] = (value, BLOCKED, prepared[i][2])
    return out


def _prepare_columns(
    parsed: ParsedFile, config: AccountConfig, secret: bytes
) -> PreparedEntries | None:
    """The whole-column path; None when some entry needs the one-by-one path's error."""
    count = len(parsed.entry_type)
    if not count:
        return PreparedEntries([], [], [], [], [])
    try:
        type_codes = pc.dictionary_encode(pa.array(parsed.entry_type, pa.string()))
        source_codes = pc.dictionary_encode(pa.array(parsed.entry_source, pa.string()))
        values = pa.array(parsed.entry_value, pa.string())
    except (pa.ArrowException, UnicodeError, TypeError, ValueError):
        return None
    if pc.max(pc.utf8_length(values)).as_py() > MAX_RAW_VALUE_BYTES:
        return None
    type_names: list[str] = type_codes.dictionary.to_pylist()
    raw_sources: list[str] = source_codes.dictionary.to_pylist()
    t = type_codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    r = source_codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pair_codes, first_entry, pair_of_entry = np.unique(
        t * len(raw_sources) + r, return_index=True, return_inverse=True
    )
    types = config.key_types
    groups: dict[tuple[str, str], int] = {}
    group_of_pair = np.empty(len(pair_codes), np.int64)
    pair_type: list[KeyType] = []
    pair_source: list[str] = []
    group_route: list[tuple[KeyType, str]] = []
    for i, code in enumerate(pair_codes.tolist()):
        name = type_names[code // len(raw_sources)]
        key_type = types.get(name)
        source = ""
        if key_type is None:
            return None
        if key_type.source_scoped:
            source = raw_sources[code % len(raw_sources)]
            try:
                check_text(source, f"{name}_source", MAX_SOURCE_BYTES)
            except InvalidArgument:
                return None
        group = groups.get((name, source))
        if group is None:
            group = groups[(name, source)] = len(group_route)
            group_route.append((key_type, source))
        group_of_pair[i] = group
        pair_type.append(key_type)
        pair_source.append(source)
    del first_entry
    pair_of_entry = pair_of_entry.reshape(-1)
    entry_group = group_of_pair[pair_of_entry]
    by_group = np.argsort(entry_group, kind="stable")
    bounds = np.searchsorted(entry_group[by_group], np.arange(len(group_route) + 1))
    cleaned = np.empty(count, object)
    reasons = np.empty(count, object)
    pids = np.empty(count, object)
    for group, (key_type, source) in enumerate(group_route):
        members = by_group[bounds[group] : bounds[group + 1]]
        encoded = pc.dictionary_encode(values.take(pa.array(members)))
        verdicts = _prepare_group(secret, key_type, source, encoded.dictionary.to_pylist())
        slots = encoded.indices.to_numpy(zero_copy_only=False)
        column = np.empty(len(verdicts), object)
        column[:] = [v[0] for v in verdicts]
        cleaned[members] = column[slots]
        column[:] = [v[1] for v in verdicts]
        reasons[members] = column[slots]
        column[:] = [v[2] for v in verdicts]
        pids[members] = column[slots]
    type_column = np.empty(len(pair_type), object)
    type_column[:] = pair_type
    source_column = np.empty(len(pair_source), object)
    source_column[:] = pair_source
    return PreparedEntries(
        type_column[pair_of_entry].tolist(),
        source_column[pair_of_entry].tolist(),
        cleaned.tolist(),
        reasons.tolist(),
        pids.tolist(),
    )


def _prepare_one_by_one(
    parsed: ParsedFile, config: AccountConfig, secret: bytes
) -> PreparedEntries:
    count = len(parsed.entry_type)
    types = config.key_types
    # (key type name, the entry's source) -> (key type, the contact's source, its group)
    routes: dict[tuple[str, str], tuple[KeyType, str, _Group]] = {}
    groups: dict[tuple[str, str], _Group] = {}
    key_types: list[KeyType] = []
    sources: list[str] = []
    slots: list[int] = []
    entry_groups: list[_Group] = []
    for entry, (name, raw_source, value) in enumerate(
        zip(parsed.entry_type, parsed.entry_source, parsed.entry_value, strict=True)
    ):
        route = routes.get((name, raw_source))
        if route is None:
            route = _route(parsed, entry, types, groups)
            routes[(name, raw_source)] = route
        key_type, source, group = route
        slot = group.distinct.get(value)
        if slot is None:
            slot = group.add(parsed, entry, value)
        key_types.append(key_type)
        sources.append(source)
        slots.append(slot)
        entry_groups.append(group)
    for (name, source), group in groups.items():
        key_type = types[name]
        prepared = _contacts.prepare_many(
            secret, key_type.normalizer, key_type.name, source, group.values
        )
        group.verdicts = _mark_blocked(key_type, prepared)
    cleaned: list[str] = [""] * count
    reasons: list[str] = [""] * count
    pids: list[bytes] = [b""] * count
    for entry in range(count):
        cleaned[entry], reasons[entry], pids[entry] = entry_groups[entry].verdicts[slots[entry]]
    return PreparedEntries(key_types, sources, cleaned, reasons, pids)


@dataclass(slots=True)
class _Group:
    """The distinct raw values of one (key type, source), prepared in one compiled call."""

    distinct: dict[str, int] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, str, bytes]] = field(default_factory=list)

    def add(self, parsed: ParsedFile, entry: int, value: str) -> int:
        if len(value) > MAX_RAW_VALUE_BYTES:
            raise RecordsFileError(
                parsed.path,
                parsed.line[parsed.entry_record[entry]],
                f"a {parsed.entry_type[entry]} value is longer than {MAX_RAW_VALUE_BYTES} "
                "characters",
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordsFileError(
                parsed.path,
                parsed.line[parsed.entry_record[entry]],
                f"a {parsed.entry_type[entry]} value is not valid UTF-8 text",
            ) from None
        slot = self.distinct[value] = len(self.values)
        self.values.append(value)
        return slot


def _route(
    parsed: ParsedFile,
    entry: int,
    types: dict[str, KeyType],
    groups: dict[tuple[str, str], _Group],
) -> tuple[KeyType, str, _Group]:
    """The key type and contact source of an entry (checked once per pair), and its group."""
    name = parsed.entry_type[entry]
    line = parsed.line[parsed.entry_record[entry]]
    key_type = types.get(name)
    if key_type is None:
        raise RecordsFileError(
            parsed.path,
            line,
            f"unknown key type {name!r}; known: {', '.join(sorted(types))} "
            "(UNKNOWN_KEY_TYPE: add it with PutKeyType first)",
        )
    source = ""
    if key_type.source_scoped:
        source = parsed.entry_source[entry]
        try:
            check_text(source, f"{name}_source", MAX_SOURCE_BYTES)
        except InvalidArgument as exc:
            raise RecordsFileError(parsed.path, line, exc.message) from None
    group = groups.get((name, source))
    if group is None:
        group = groups[(name, source)] = _Group()
    return key_type, source, group
