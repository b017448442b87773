"""``generation_from_records`` on an account that already has records, on bad files, on a full map.

- Loading a file into an account that holds records (the file's records
  replace stored ones with the same (source, record_id), deleted ones go)
  equals ingesting everything online; customers the file does not change
  keep their PIDs.
- A malformed file is refused naming the file and the line, and nothing is
  written; a generation that would not fit the map is refused before writing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from idlink.domain.check import check_account
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.errors import FailedPrecondition, StoreFull
from idlink.generations import materialize
from idlink.generations.manifest import ExportError
from idlink.generations.records_file import RecordsFileError
from idlink.security.crypto import open_store
from idlink.security.secrets import load_master_secret
from tests.generations.test_materialize import (
    ACCOUNT,
    BASE_US,
    MASTER,
    assert_same_store,
    dump,
    new_engine,
)

STAGING = "acme-staging"


def _records(prefix: str, count: int, *, offset: int = 0) -> list[RecordInput]:
    out = []
    for i in range(count):
        keys = [
            ContactKey("phone", f"+1 555 020 {(i + offset) % 23:04d}"),
            ContactKey("email", f"{prefix}{i % 17}@example.com"),
            ContactKey("id", f"C{i % 29}", "crm"),
        ]
        out.append(RecordInput("crm", f"{prefix}-{i}", keys, BASE_US + (i + offset) * 1_000_000))
    return out


def _jsonl(path: Path, records: list[RecordInput]) -> Path:
    with path.open("w") as out:
        for r in records:
            data = {
                "source": r.source,
                "record_id": r.record_id,
                "observed_at": r.observed_at_us / 1_000_000,
                "contacts": [
                    {"type": k.type, "value": k.value, "source": k.source} for k in r.contacts
                ],
                "deleted": r.deleted,
            }
            out.write(json.dumps(data) + "\n")
    return path


def _canonical(records: list[RecordInput]) -> list[RecordInput]:
    return sorted(records, key=lambda r: (r.observed_at_us, r.source, r.record_id))


def test_loading_into_an_account_with_records_equals_ingesting_all(impl: str) -> None:
    first = _records("a", 60) + [
        RecordInput(
            "web",
            f"alone-{i}",
            [ContactKey("email", f"alone{i}@example.com"), ContactKey("phone", f"+1555030{i:04d}")],
            BASE_US + i,
        )
        for i in range(5)
    ]
    # The file: new records, records replacing stored ones with other contacts, deletions.
    second = _records("b", 40, offset=30)
    replaced = [
        RecordInput("crm", f"a-{i}", [ContactKey("email", f"moved{i}@example.com")], BASE_US + i)
        for i in range(0, 20, 3)
    ]
    deleted = [RecordInput("crm", f"a-{i}", [], BASE_US, deleted=True) for i in range(1, 20, 3)]
    file_records = second + replaced + deleted
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = _jsonl(root / "records.jsonl", file_records)
        with new_engine(root / "online") as online:
            online.ingest(ACCOUNT, _canonical(first), actor="load")
            online.ingest(ACCOUNT, _canonical(file_records), actor="load")
            expected = dump(online)
        with new_engine(root / "loaded") as engine:
            engine.ingest(ACCOUNT, _canonical(first), actor="load")
            before = dump(engine)
            planned = materialize.generation_from_records(engine, ACCOUNT, path, progress=False)
            materialize.check_fits(engine, planned)
            # The staging account: configured (the defaults here), empty.
            engine.write(STAGING, "", lambda unit: None)
            materialize.write_generation(
                engine, STAGING, planned, progress=False, live_account=ACCOUNT
            )
            found = dump(engine, STAGING)
            assert dump(engine) == before  # the live account is not touched
            assert check_account(engine, STAGING).ok, check_account(engine, STAGING).problems
            # A customer the file leaves alone keeps its PID.
            kept = {frozenset(c.contact_pids): pid for pid, c in before.customers.items()}
            after = {frozenset(c.contact_pids): pid for pid, c in found.customers.items()}
            same = set(kept) & set(after)
            assert same, "no customer is the same before and after"
            assert all(kept[members] == after[members] for members in same)
        assert_same_store(expected, found, arrival=False)


def test_write_refuses_a_target_that_is_not_empty(impl: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = _jsonl(root / "r.jsonl", _records("a", 5))
        with new_engine(root / "d") as engine:
            engine.write(ACCOUNT, "", lambda unit: None)
            planned = materialize.generation_from_records(engine, ACCOUNT, path, progress=False)
            materialize.write_generation(
                engine, ACCOUNT, planned, progress=False, live_account=None
            )
            with pytest.raises(FailedPrecondition, match="empty account"):
                materialize.write_generation(
                    engine, ACCOUNT, planned, progress=False, live_account=None
                )
            with pytest.raises(FailedPrecondition, match="does not exist"):
                materialize.write_generation(
                    engine, "nobody", planned, progress=False, live_account=None
                )


BAD_FILES = [
    ("r.csv", "source,record_id,phone\ncrm,1,+15550100001\ncrm,2\n", 3, "cells"),
    (
        "r.csv",
        "source,record_id,observed_at,phone\ncrm,1,yesterday,+15550100001\n",
        2,
        "observed_at",
    ),
    (
        "r.csv",
        "source,record_id,phone\n\ncrm,1,+15550100001\n,2,+15550100002\n",
        4,
        "source is empty",
    ),
    ("r.csv", "source,record_id,loyalty\ncrm,1,L-1\n", 2, "unknown key type 'loyalty'"),
    ("r.csv", "record_id,phone\n1,+15550100001\n", 1, "no 'source' column"),
    ("r.csv", "", 1, "empty"),
    ("r.csv", "source,record_id,id,id_source\ncrm,1,A,\x07bad\n", 2, "control character"),
    (
        "r.jsonl",
        '{"source":"crm","record_id":"1","contacts":[{"type":"phone","value":"1"}]}\n{oops\n',
        2,
        "not valid JSON",
    ),
    ("r.jsonl", '{"source":"crm","record_id":"1","contacts":[]}\n', 1, "no contacts"),
    (
        "r.jsonl",
        '{"source":"crm","record_id":"'
        + "x" * 300
        + '","contacts":[{"type":"email","value":"a@b.co"}]}\n',
        1,
        "record_id is longer",
    ),
]


@pytest.mark.parametrize(("name", "text", "line", "why"), BAD_FILES)
def test_a_malformed_file_names_file_and_line(name: str, text: str, line: int, why: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / name
        path.write_text(text)
        with new_engine(root / "d") as engine:
            engine.ingest(ACCOUNT, _records("a", 3))
            before = dump(engine)
            with pytest.raises(RecordsFileError) as caught:
                materialize.generation_from_records(engine, ACCOUNT, path, progress=False)
            message = str(caught.value)
            assert message.startswith(f"{path}: line {line}: "), message
            assert why in message
            assert caught.value.line == line
            assert dump(engine) == before


def test_a_missing_file_is_refused() -> None:
    with tempfile.TemporaryDirectory() as folder:
        missing = Path(folder) / "nope.csv"
        with (
            new_engine(Path(folder) / "d") as engine,
            pytest.raises(RecordsFileError, match="no such file"),
        ):
            materialize.generation_from_records(engine, ACCOUNT, missing, progress=False)


def test_a_load_that_does_not_fit_the_map_is_refused_before_writing() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = root / "d"
        data.mkdir(mode=0o700)
        (data / "master.key").write_bytes(MASTER)
        data.joinpath("master.key").chmod(0o600)
        path = _jsonl(root / "r.jsonl", _records("a", 3000))
        with open_store(data, durable=False, multi_process=True, map_size=4 << 20) as store:
            engine = IdentityEngine(store, load_master_secret(data))
            engine.write(ACCOUNT, "", lambda unit: None)
            planned = materialize.generation_from_records(engine, ACCOUNT, path, progress=False)
            with pytest.raises(StoreFull, match="store map") as caught:
                materialize.check_fits(engine, planned)
            assert "MiB" in str(caught.value)
            assert engine.partition(ACCOUNT) == []


def test_a_recluster_folder_loads_as_the_live_store(impl: str) -> None:
    """``load --in``: export, recluster (local), read the folder back, write it beside the live."""
    from idlink.generations.engines import recluster
    from idlink.generations.export import export_records

    records = _records("a", 80) + [
        RecordInput("web", "hub", [ContactKey("email", "no@email.com")], BASE_US),
    ]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = root / "d"
        with new_engine(data) as engine:
            engine.ingest(ACCOUNT, _canonical(records), actor="load")
        export_records(data, ACCOUNT, root / "export")
        manifest = recluster(root / "export", root / "generation", "local")
        assert manifest.details["export"] == str((root / "export").resolve())
        with open_store(data, durable=False) as store:
            engine = IdentityEngine(store, load_master_secret(data))
            live = dump(engine)
            planned = materialize.generation_from_folder(engine, ACCOUNT, root / "generation")
            materialize.check_fits(engine, planned)
            engine.write(STAGING, "", lambda unit: None)
            materialize.write_generation(
                engine, STAGING, planned, progress=False, live_account=ACCOUNT
            )
            found = dump(engine, STAGING)
            assert check_account(engine, STAGING).ok
            # Nothing changed since the export: the same store, the same customer PIDs.
            assert set(found.customers) == set(live.customers)
            assert_same_store(live, found, arrival=True)
            # Another account's generation is refused, naming the manifest.
            with pytest.raises(ExportError, match="manifest.json"):
                materialize.generation_from_folder(engine, STAGING, root / "generation")


@pytest.mark.parametrize(
    "text",
    [
        "1714555800",
        "1714555800.5",
        "0",
        "1.9999999",
        "1714555800.123456",
        "1e9",
        " 17 ",
        "2024-05-01T09:30:00Z",
        "2024-05-01T09:30:00.25+02:00",
        "1714555800.0000005",
    ],
)
def test_observed_at_is_read_as_ingest_reads_it(text: str) -> None:
    from idlink.client.records import parse_time
    from idlink.generations.records_file import _timestamp_us

    stamp = parse_time(text)
    assert stamp is not None
    assert _timestamp_us(text) == stamp.seconds * 1_000_000 + stamp.nanos // 1000


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "1e20", "soon", "2024-05-01T09:30:00"])
def test_an_observed_at_ingest_refuses_is_refused(text: str) -> None:
    from idlink.generations.records_file import _timestamp_us

    with pytest.raises(ValueError, match="observed_at"):
        _timestamp_us(text)


def test_rows_go_in_with_plain_puts_when_a_later_account_holds_larger_keys(impl: str) -> None:
    """A target created before another account cannot append: the same rows, by plain puts."""
    records = _records("a", 50)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = _jsonl(root / "r.jsonl", records)
        with new_engine(root / "online") as online:
            online.ingest(ACCOUNT, _canonical(records), actor="load")
            expected = dump(online)
        with new_engine(root / "loaded") as engine:
            engine.write(ACCOUNT, "", lambda unit: None)
            engine.ingest("later", _records("z", 5))  # a larger account id, rows in every table
            planned = materialize.generation_from_records(engine, ACCOUNT, path, progress=False)
            report = materialize.write_generation(
                engine, ACCOUNT, planned, progress=False, live_account=None, batch_rows=40
            )
            assert report.plain_batches > 0
            found = dump(engine)
            assert check_account(engine, ACCOUNT).ok
            assert check_account(engine, "later").ok
        assert_same_store(expected, found, arrival=True)
