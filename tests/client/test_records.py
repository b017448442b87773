"""Reading CSV and JSON Lines files of records (the formats of idlink ingest), without a server."""

from __future__ import annotations

import pytest

from idlink.client.records import detect_format, parse_time, read_records


def parse(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return list(read_records(path))


def contacts(record):
    return [(c.type, c.value, c.source) for c in record.contacts]


def test_csv_cells_split_on_bars_and_sources_come_from_type_source_columns(tmp_path):
    rows = parse(
        tmp_path,
        "r.csv",
        "Source,Record_ID,phone,email,id,id_source\n"
        "crm,1,+1 555 123 4567, a@x.com | b@x.com ,C-1,salesforce\n"
        "\n"
        "zendesk,T-2,,c@x.com,77,\n",
    )
    assert [line for line, _, _ in rows] == [2, 4]
    first, second = rows[0][1], rows[1][1]
    assert contacts(first) == [
        ("phone", "+1 555 123 4567", "crm"),
        ("email", " a@x.com ", "crm"),
        ("email", " b@x.com ", "crm"),
        ("id", "C-1", "salesforce"),
    ]
    assert contacts(second)[-1] == ("id", "77", "zendesk")
    assert not first.HasField("observed_at")


def test_csv_deleted_records_need_no_contacts(tmp_path):
    rows = parse(tmp_path, "r.csv", "source,record_id,deleted,phone\ncrm,1,yes,\ncrm,2,0,+15551\n")
    assert rows[0][1].deleted and not rows[0][1].contacts
    assert not rows[1][1].deleted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("record_id,phone\n1,+1555\n", "the header has no 'source' column"),
        ("source,record_id\ncrm,1\n", "the header has no contact column"),
        ("source,record_id,Phone Number\n", "column 'phone number' is not a key type name"),
        ("source,record_id,phone,phone\n", "names column 'phone' twice"),
        ("source,record_id,email,id_source\n", "column 'id_source' has no 'id' column"),
        ("", "the file is empty"),
    ],
)
def test_csv_header_problems_are_named(tmp_path, text, message):
    rows = parse(tmp_path, "r.csv", text)
    assert rows[0][1] is None
    assert message in rows[0][2]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("crm,1,+1555,extra", "4 cells, but the header has 3 columns"),
        (",1,+1555", "source is empty"),
        ("crm,1,", "the record has no contacts"),
    ],
)
def test_csv_bad_rows_are_named_with_their_line(tmp_path, row, message):
    rows = parse(tmp_path, "r.csv", f"source,record_id,phone\ncrm,0,+1555\n{row}\n")
    assert rows[1][0] == 3
    assert rows[1][1] is None
    assert message in rows[1][2]


def test_csv_line_numbers_count_quoted_newlines(tmp_path):
    rows = parse(tmp_path, "r.csv", 'source,record_id,phone\ncrm,"a\nb",+1555\ncrm,2,\n')
    assert rows[0][0] == 2
    assert rows[1][0] == 4


def test_json_lines_records_and_defaults(tmp_path):
    rows = parse(
        tmp_path,
        "r.jsonl",
        '{"source": "crm", "record_id": 7, "observed_at": 1714555800.5, '
        '"contacts": [{"type": "phone", "value": "+1555"}, '
        '{"type": "id", "value": "X", "source": "sf"}]}\n'
        '{"source": "crm", "record_id": "8", "deleted": true}\n',
    )
    record = rows[0][1]
    assert record.record_id == "7"
    assert (record.observed_at.seconds, record.observed_at.nanos) == (1714555800, 500_000_000)
    assert contacts(record) == [("phone", "+1555", "crm"), ("id", "X", "sf")]
    assert rows[1][1].deleted


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "a record must be a JSON object"),
        ('{"source": "crm", "record_id": "1", "contacts": {}}', "contacts must be a list"),
        ('{"source": "crm", "record_id": "1", "contacts": [{"type": "phone"}]}', "value must be"),
        ('{"source": "crm", "record_id": "1", "deleted": "no"}', "deleted must be true or false"),
        ('{"source": 5, "record_id": "1"}', "source must be a string"),
    ],
)
def test_json_lines_problems_are_named(tmp_path, line, message):
    rows = parse(tmp_path, "r.jsonl", line + "\n")
    assert rows[0][1] is None
    assert message in rows[0][2]


def test_not_utf8_is_reported(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"source,record_id,phone\ncrm,1,\xff\xfe\n")
    rows = list(read_records(path))
    assert rows[-1][1] is None
    assert "not UTF-8" in rows[-1][2]


def test_format_is_detected_from_extension_or_content(tmp_path):
    for name, text, expected in [
        ("a.csv", '{"x": 1}', "csv"),
        ("a.ndjson", "source,record_id", "jsonl"),
        ("a.txt", '\n  {"source": "crm"}', "jsonl"),
        ("a.txt", "source,record_id", "csv"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        assert detect_format(path) == expected, name


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2024-05-01T09:30:00Z", 1714555800),
        ("2024-05-01T11:30:00+02:00", 1714555800),
        ("1714555800", 1714555800),
        (1714555800, 1714555800),
    ],
)
def test_observed_at_is_rfc3339_or_epoch_seconds(value, seconds):
    assert parse_time(value).seconds == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-05-01 09:30", "has no UTC offset"),
        ("yesterday", "neither RFC 3339"),
        (-5, "out of range"),
        (True, "must be RFC 3339 text or epoch seconds"),
    ],
)
def test_bad_observed_at_says_why(value, message):
    with pytest.raises(ValueError, match=message):
        parse_time(value)
