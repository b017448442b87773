"""``idlink load`` end to end on the real generation writer (generations/materialize.py).

A records load into a new and into a populated account, a generation
(export, recluster, load --in) with records arriving between the export and
the switch, a generation older than the live store, and bad input that
leaves the store untouched. Each ends with the stored partition equal to a
rebuild from the records and ``idlink check`` clean.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from idlink.domain import switch
from idlink.domain.check import check_store
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import AccountPolicy
from idlink.generations import load as loading
from idlink.generations.engines import recluster
from idlink.generations.export import export_records
from idlink.security.crypto import open_store
from idlink.security.secrets import load_master_secret

ACCOUNT = "acme"


def _keys(rng: random.Random) -> list[ContactKey]:
    keys = [ContactKey("email", f"p{rng.randrange(50)}@x.test")]
    if rng.random() < 0.6:
        keys.append(ContactKey("phone", f"+4420794600{rng.randrange(70):02d}"))
    return keys


def _records(rng: random.Random, count: int, prefix: str, start: int = 0) -> list[RecordInput]:
    return [
        RecordInput("crm", f"{prefix}{i}", _keys(rng), start + rng.randrange(100_000))
        for i in range(count)
    ]


def _write_jsonl(path: Path, records: list[RecordInput]) -> Path:
    with path.open("w") as out:
        for r in records:
            out.write(
                json.dumps(
                    {
                        "source": r.source,
                        "record_id": r.record_id,
                        "observed_at": r.observed_at_us / 1e6,
                        "contacts": [{"type": k.type, "value": k.value} for k in r.contacts],
                    }
                )
                + "\n"
            )
    return path


def _store(tmp_path: Path, records: list[RecordInput] | None) -> Path:
    data = tmp_path / "data"
    with open_store(data, durable=False) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        engine.set_account_policy(ACCOUNT, AccountPolicy(8, 4))
        if records:
            engine.ingest(ACCOUNT, records)
    return data


def _engine(data: Path):
    return loading.open_engine(data)


def _sorted(parts) -> list:
    return sorted(sorted(p) for p in parts)


def _assert_whole(engine: IdentityEngine) -> None:
    assert _sorted(engine.partition(ACCOUNT)) == _sorted(engine.rebuild_partition(ACCOUNT))
    assert [r.problems for r in check_store(engine)] == [[]]
    assert switch.staging_accounts(engine) == []
    assert switch.pending_drops(engine) == []


def _record_ids(engine: IdentityEngine) -> set[str]:
    with engine.read(ACCOUNT) as view:
        return {r.record_id for r in view.txn.iter_records()}


def test_records_load_into_a_new_account(tmp_path: Path) -> None:
    rng = random.Random(10)
    data = _store(tmp_path, None)
    path = _write_jsonl(tmp_path / "all.jsonl", _records(rng, 80, "file"))
    with _engine(data) as engine:
        result = loading.load(engine, ACCOUNT, records=path)
        assert result.records == 80
        assert _record_ids(engine) == {f"file{i}" for i in range(80)}
        _assert_whole(engine)
        feed = engine.changes_after(ACCOUNT, 0, 100_000)
        assert feed and all(e.detail == "generation load" for e in feed)
        assert {e.kind for e in feed} == {"created"}
        assert len(feed) == len(engine.partition(ACCOUNT))


def test_records_load_into_a_populated_account(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = _store(tmp_path, _records(rng, 40, "old"))
    added = _records(rng, 60, "file")
    path = _write_jsonl(tmp_path / "more.jsonl", added)
    with _engine(data) as engine:
        before = engine.changes_after(ACCOUNT, 0, 100_000)
        result = loading.load(engine, ACCOUNT, records=path)
        assert result.records == 100
        assert _record_ids(engine) == {f"old{i}" for i in range(40)} | {
            f"file{i}" for i in range(60)
        }
        _assert_whole(engine)
        feed = engine.changes_after(ACCOUNT, 0, 100_000)
        assert [e.seq for e in feed] == list(range(1, len(feed) + 1))
        assert feed[: len(before)] == before
        assert result.switch is not None and result.switch.events
        assert [e for e in feed if e.detail == "generation load"]


def test_generation_load_replays_what_arrived_after_the_export(tmp_path: Path) -> None:
    rng = random.Random(12)
    data = _store(tmp_path, _records(rng, 80, "r"))
    export_records(data, ACCOUNT, tmp_path / "export")
    recluster(tmp_path / "export", tmp_path / "gen", "local")
    late = _records(rng, 10, "late")
    new = _records(rng, 10, "new", start=500_000)

    def between(step: str) -> None:
        if step == "written":
            engine.ingest(ACCOUNT, late)
            engine.delete_record(ACCOUNT, "crm", "r7")
        if step == "copied":
            engine.ingest(ACCOUNT, new)
            engine.set_contact_policy(ACCOUNT, ContactKey("email", "p3@x.test"), do_not_link=True)

    with _engine(data) as engine:
        result = loading.load(
            engine,
            ACCOUNT,
            generation=tmp_path / "gen",
            export=tmp_path / "export",
            between=between,
        )
        ids = _record_ids(engine)
        assert {r.record_id for r in late + new} <= ids and "r7" not in ids
        assert len(ids) == 80 - 1 + 20
        _assert_whole(engine)
        assert result.switch is not None
        # The same generation again: its export is of the account id the load replaced.
        with pytest.raises(switch.GenerationTooOld):
            loading.load(engine, ACCOUNT, generation=tmp_path / "gen", export=tmp_path / "export")
        _assert_whole(engine)


def test_load_command_refuses_a_bad_records_file_and_leaves_the_store(tmp_path: Path) -> None:
    rng = random.Random(13)
    data = _store(tmp_path, _records(rng, 10, "r"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "crm", "record_id": "1", "contacts": []}\n{"source": \n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "idlink",
            "load",
            "--data",
            str(data),
            "--account",
            ACCOUNT,
            "--records",
            str(bad),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl" in lines[0] and "Traceback" not in done.stderr
    with _engine(data) as engine:
        assert _record_ids(engine) == {f"r{i}" for i in range(10)}
        assert switch.staging_accounts(engine) == []


def test_load_command_switches_a_generation(tmp_path: Path) -> None:
    rng = random.Random(14)
    data = _store(tmp_path, _records(rng, 30, "r"))
    export_records(data, ACCOUNT, tmp_path / "export")
    recluster(tmp_path / "export", tmp_path / "gen", "local")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "idlink",
            "load",
            "--data",
            str(data),
            "--in",
            str(tmp_path / "gen"),
            "--export",
            str(tmp_path / "export"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded account acme: 30 records" in done.stdout
    with _engine(data) as engine:
        _assert_whole(engine)


def test_load_command_refuses_a_truncated_generation(tmp_path: Path) -> None:
    rng = random.Random(15)
    data = _store(tmp_path, _records(rng, 10, "r"))
    export_records(data, ACCOUNT, tmp_path / "export")
    recluster(tmp_path / "export", tmp_path / "gen", "local")
    (tmp_path / "gen" / "manifest.json").unlink()
    done = subprocess.run(
        [
            sys.executable, "-m", "idlink", "load", "--data", str(data), "--in",
            str(tmp_path / "gen"), "--export", str(tmp_path / "export"), "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "manifest.json" in lines[0] and "Traceback" not in done.stderr
    with _engine(data) as engine:
        assert _record_ids(engine) == {f"r{i}" for i in range(10)}
        assert switch.staging_accounts(engine) == []
