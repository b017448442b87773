"""Issue 12, bad input: a truncated, damaged or foreign export is refused, naming the file.

Run as a user runs them: ``idlink export-records`` and ``idlink recluster``
(``idlink.cli.main``), exit status 1 and one line on stderr that says which
file is at fault and why; nothing is written to the output folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from idlink.cli import main
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from tests.generations.conftest import ACCOUNT, Built, build_store, configure

PHONE = "+14155550123"
EMAIL = "jane.doe@example.com"


def people(engine: IdentityEngine, account: str = ACCOUNT) -> None:
    configure(engine, account)
    engine.link(
        account,
        RecordInput("crm", "1", [ContactKey("phone", PHONE), ContactKey("email", EMAIL)], 1),
    )
    engine.link(
        account,
        RecordInput("desk", "7", [ContactKey("email", EMAIL), ContactKey("id", "C-9", "crm")], 2),
    )


@pytest.fixture
def built(tmp_path: Path) -> Built:
    def apply(engine: IdentityEngine) -> None:
        people(engine)
        people(engine, "other")

    return build_store(tmp_path / "store", apply)


@pytest.fixture
def export(built: Built, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    assert (
        main(["export-records", "--data", str(built.data), "--account", ACCOUNT, "--out", str(out)])
        == 0
    )
    return out


def recluster(export: Path, out: Path, *extra: str) -> int:
    return main(["recluster", "--engine", "local", "--in", str(export), "--out", str(out), *extra])


def refused(capsys: pytest.CaptureFixture[str], status: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert status == 1, err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    return err


def test_the_export_holds_no_contact_value(export: Path):
    for path in export.iterdir():
        raw = path.read_bytes()
        assert PHONE.encode() not in raw and EMAIL.encode() not in raw, path.name
        assert b"14155550123" not in raw, path.name
        if path.suffix == ".parquet":
            text = json.dumps(pq.read_table(path).to_pylist(), default=repr)
            assert PHONE not in text and EMAIL not in text and "C-9" not in text, path.name
    assert oct(os.stat(export).st_mode & 0o777) == "0o700"
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in export.iterdir())


def test_a_good_export_reclusters(export: Path, tmp_path: Path, capsys):
    assert recluster(export, tmp_path / "gen") == 0
    out = capsys.readouterr().out
    assert "3 contacts" not in out  # the line counts customers, not contacts
    assert "1 customers (1 unchanged" in out, out
    table = pq.read_table(tmp_path / "gen" / "customers.parquet")
    assert table.num_rows == 1 and len(table.column("contact_pids")[0]) == 3


def test_a_missing_manifest_is_a_truncated_export(export: Path, tmp_path: Path, capsys):
    (export / "manifest.json").unlink()
    status = recluster(export, tmp_path / "gen")
    refused(capsys, status, "manifest.json is missing", "not a whole")
    assert not (tmp_path / "gen").exists()


def test_a_truncated_file_is_named(export: Path, tmp_path: Path, capsys):
    path = export / "records.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    refused(capsys, recluster(export, tmp_path / "gen"), "records.parquet", "truncated")


def test_a_changed_byte_fails_the_checksum(export: Path, tmp_path: Path, capsys):
    path = export / "contacts.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(capsys, recluster(export, tmp_path / "gen"), "contacts.parquet", "SHA-256")


def test_a_file_of_another_export_is_named(built: Built, export: Path, tmp_path: Path, capsys):
    other = tmp_path / "other-export"
    assert (
        main(
            ["export-records", "--data", str(built.data), "--account", "other", "--out", str(other)]
        )
        == 0
    )
    # Swapped in with a manifest that agrees on its size and checksum.
    (export / "records.parquet").write_bytes((other / "records.parquet").read_bytes())
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["files"]["records.parquet"] = json.loads((other / "manifest.json").read_text())[
        "files"
    ]["records.parquet"]
    (export / "manifest.json").write_text(json.dumps(manifest))
    refused(
        capsys, recluster(export, tmp_path / "gen"), "records.parquet", "another export", "'other'"
    )


def test_an_export_of_another_account_is_refused(
    built: Built, export: Path, tmp_path: Path, capsys
):
    status = recluster(export, tmp_path / "gen", "--data", str(built.data), "--account", "other")
    refused(capsys, status, "manifest.json", "account 'acme', not 'other'")
    assert not (tmp_path / "gen").exists()


def test_an_export_made_under_another_secret_is_refused(export: Path, tmp_path: Path, capsys):
    stranger = build_store(tmp_path / "stranger", people, master_hex="ab" * 32)
    status = recluster(export, tmp_path / "gen", "--data", str(stranger.data), "--account", ACCOUNT)
    refused(capsys, status, "manifest.json", "another account secret")


def test_the_right_store_and_account_are_accepted(built: Built, export: Path, tmp_path: Path):
    assert recluster(export, tmp_path / "gen", "--data", str(built.data), "--account", ACCOUNT) == 0


def test_a_manifest_that_is_not_json_is_named(export: Path, tmp_path: Path, capsys):
    (export / "manifest.json").write_text("{not json")
    refused(capsys, recluster(export, tmp_path / "gen"), "manifest.json", "not valid JSON")


def test_a_generation_is_not_an_export(export: Path, tmp_path: Path, capsys):
    assert recluster(export, tmp_path / "gen") == 0
    capsys.readouterr()
    refused(
        capsys,
        recluster(tmp_path / "gen", tmp_path / "again"),
        "'idlink-generation'",
        "not 'idlink-export'",
    )


def test_output_folders_must_be_new(built: Built, export: Path, tmp_path: Path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    status = main(
        ["export-records", "--data", str(built.data), "--account", ACCOUNT, "--out", str(busy)]
    )
    refused(capsys, status, "is not empty")
    refused(capsys, recluster(export, busy), "not an empty folder")
    assert (busy / "keep.txt").read_text() == "mine"


def test_an_unknown_account_or_store_is_a_clear_error(built: Built, tmp_path: Path, capsys):
    status = main(
        [
            "export-records",
            "--data",
            str(built.data),
            "--account",
            "nobody",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    refused(capsys, status, "account 'nobody'")
    status = main(
        [
            "export-records",
            "--data",
            str(tmp_path / "none"),
            "--account",
            ACCOUNT,
            "--out",
            str(tmp_path / "y"),
        ]
    )
    refused(capsys, status, "no idlink store")
    assert not (tmp_path / "none").exists()


def test_records_naming_a_contact_the_export_does_not_hold_are_refused(tmp_path, capsys):
    import pyarrow as pa

    from idlink.generations.export import write_export

    entry = pa.struct(
        [("contact_pid", pa.binary()), ("type", pa.string()), ("source", pa.string())]
    )
    records = pa.table(
        {
            "source": ["crm"],
            "record_id": ["1"],
            "observed_at_us": [1],
            "deleted": [False],
            "contacts": pa.array(
                [[{"contact_pid": b"\x01" * 16, "type": "phone", "source": ""}]], pa.list_(entry)
            ),
        }
    )
    policy = pa.table({"max_contacts": [100], "isolate_min_connections": [20]})
    write_export(
        tmp_path / "export",
        account=ACCOUNT,
        fingerprint="0" * 64,
        change_seq=0,
        tables={"records": records, "account_policy": policy},
    )
    status = recluster(tmp_path / "export", tmp_path / "gen")
    refused(capsys, status, "records.parquet", "contacts.parquet", "1 contact(s)")
    assert not (tmp_path / "gen").exists()
