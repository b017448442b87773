"""The whole-column CSV reader gives exactly what the line-by-line reader gives, or steps aside.

``records_file._read_csv_columns`` reads the common file (no quotes, printable
ASCII) with Arrow's CSV reader; anything it cannot be sure of returns False
and ``_read_csv`` (csv.reader) reads the file. Random files, clean and
dirty, are read both ways and compared column by column; a file with
something to refuse gives the line-by-line reader's error either way.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from idlink.generations import records_file
from idlink.generations.records_file import ParsedFile, RecordsFileError, parse_file

HEADERS = [
    ["source", "record_id", "observed_at", "phone", "email", "id"],
    ["Record_ID ", " SOURCE", "email", "email_source", "deleted", "phone"],
    ["source", "record_id", "id", "observed_at", "deleted", "id_source", "device"],
]


def _cell(rng: random.Random, name: str) -> str:
    if name == "observed_at":
        return rng.choice(
            [
                "",
                "1700000000",
                "1700000000.5",
                "1700000000.123456",
                "1700000000.0000005",
                "1700000000.9999996",
                "1.7e9",
                ".5",
                "12.",
                "2024-05-01T09:30:00Z",
                "2024-05-01T09:30:00.25+02:00",
                f"{rng.uniform(0, 2e9):.6f}",
                f"{rng.uniform(0, 2e9)!r}",
                " 1700000000 ",
            ]
        )
    if name == "deleted":
        return rng.choice(["", "0", "false", "no", "N", " f ", "FALSE", "1", "yes", "True"])
    if name.endswith("_source"):
        return rng.choice(["", "", "  ", "web", " shop ", "crm2"])
    if name.strip().lower() in ("source",):
        return rng.choice(["crm", " crm ", "shop", "a" * 128])
    if name.strip().lower() == "record_id":
        return f"r{rng.randrange(400)}" + rng.choice(["", " ", "x"])
    parts = [
        rng.choice(
            ["+14155550100", "415 555 0101", "a@b.com", " A@B.com ", "id-7", "x\ty", " ", ""]
        )
        for _ in range(rng.choice([1, 1, 1, 2, 3]))
    ]
    return "|".join(parts)


def _file(rng: random.Random, header: list[str], rows: int) -> str:
    lines = [",".join(header)]
    for _ in range(rows):
        cells = [_cell(rng, name) for name in header]
        contact_cells = [
            c
            for n, c in zip(header, cells, strict=True)
            if n.strip().lower() not in ("source", "record_id", "observed_at", "deleted")
            and not n.endswith("_source")
        ]
        if not any(part.strip() for c in contact_cells for part in c.split("|")):
            cells[-1] = "+14155550199"  # a record needs a contact
        lines.append(",".join(cells))
    return "\n".join(lines) + rng.choice(["\n", ""])


def _line_by_line(path: Path) -> ParsedFile:
    parsed = ParsedFile(path)
    records_file._read_csv(path, parsed)
    return parsed


def _columns(path: Path) -> ParsedFile | None:
    parsed = ParsedFile(path)
    return parsed if records_file._read_csv_columns(path, parsed) else None


@pytest.mark.parametrize("seed", range(12))
def test_clean_files_read_in_columns_equal_the_line_by_line_reader(tmp_path, seed):
    rng = random.Random(seed)
    header = HEADERS[seed % len(HEADERS)]
    text = _file(rng, header, rng.choice([0, 1, 5, 300]))
    if seed % 4 == 1:
        text = text.replace("\n", "\r\n")
    path = tmp_path / "records.csv"
    path.write_bytes((b"\xef\xbb\xbf" if seed % 3 == 0 else b"") + text.encode())
    fast = _columns(path)
    assert fast is not None, "a clean file takes the column path"
    assert dataclasses.asdict(fast) == dataclasses.asdict(_line_by_line(path))
    assert dataclasses.asdict(parse_file(path)) == dataclasses.asdict(fast)


DIRTY = [
    ('source,record_id,phone\ncrm,"r1",+14155550100\n', None),  # quotes: csv.reader's rules
    ("source,record_id,phone\n\ncrm,r1,+14155550100\n", None),  # a blank line
    ("source,record_id,phone\n,,\ncrm,r1,+14155550100\n", None),  # a row of blank cells
    ("source,record_id,phone\ncrm,r1,+14155550100\r", None),  # a lone CR
    ("source,record_id,phone\ncrm,r1,+1415555é\n", None),  # non-ASCII
    ("source,record_id,phone\ncrm,r\x01,+14155550100\n", "line 2"),
    ("source,record_id,phone\ncrm,r1\n", "line 2"),  # too few cells
    ("source,record_id,phone\ncrm,,+14155550100\n", "line 2: record_id is empty"),
    ("source,record_id,phone\n ,r1,+14155550100\n", "line 2: source is empty"),
    ("source,record_id,phone\ncrm,r1, \n", "line 2: the record has no contacts"),
    ("source,record_id,phone,deleted\ncrm,r1,+1,maybe\n", "line 2: deleted 'maybe'"),
    ("source,record_id,phone,observed_at\ncrm,r1,+1,soon\n", "line 2: observed_at 'soon'"),
    ("source,record_id,phone\ncr\tm,r1,+14155550100\n", "line 2"),  # check_text on a tab
    ("source,record_id,phone\ncrm,r1," + "|".join(["+1"] * 65) + "\n", "line 2: the record has 65"),
    ("source,phone\ncrm,+1\n", "line 1: the header has no 'record_id'"),
]


@pytest.mark.parametrize("text,error", DIRTY, ids=range(len(DIRTY)))
def test_other_files_go_line_by_line_with_the_same_result_or_error(tmp_path, text, error):
    path = tmp_path / "records.csv"
    path.write_bytes(text.encode())
    assert _columns(path) is None
    if error is None:
        assert dataclasses.asdict(parse_file(path)) == dataclasses.asdict(_line_by_line(path))
    else:
        with pytest.raises(RecordsFileError, match=error):
            parse_file(path)


def test_an_observed_at_on_a_second_boundary_rounds_as_the_line_reader_does(tmp_path):
    path = tmp_path / "records.csv"
    stamps = ["1700000000.9999996", "0.0000005", "0.0000015", "1700000000.0000025", "0"]
    rows = "".join(f"crm,r{i},+1415555010{i},{s}\n" for i, s in enumerate(stamps))
    path.write_text("source,record_id,phone,observed_at\n" + rows)
    fast = _columns(path)
    assert fast is not None
    assert fast.observed_at_us == _line_by_line(path).observed_at_us
    assert fast.observed_at_us[0] == 1_700_000_000_000_000  # the line reader's own rounding


def test_a_file_read_in_many_blocks_equals_the_line_by_line_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(records_file, "_BLOCK_BYTES", 1 << 10)  # columns in many chunks
    rng = random.Random(99)
    for header in HEADERS:
        path = tmp_path / "records.csv"
        path.write_text(_file(rng, header, 2000))
        fast = _columns(path)
        assert fast is not None
        assert dataclasses.asdict(fast) == dataclasses.asdict(_line_by_line(path))
