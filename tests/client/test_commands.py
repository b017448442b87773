"""The idlink ingest and resolve commands, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from idlink.v1 import identity_pb2

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "records.csv"


def run_idlink(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlink", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def ingest(server, token, account, path) -> subprocess.CompletedProcess[str]:
    return run_idlink(
        "ingest", "--target", server.target, "--token", token, "--account", account, str(path)
    )


def resolve(server, token, account, *args: str) -> subprocess.CompletedProcess[str]:
    return run_idlink(
        "resolve", "--target", server.target, "--token", token, "--account", account, *args
    )


def test_ingest_csv_links_contacts_named_together(server, token, account, idlink):
    done = ingest(server, token, account, EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "ingested 5 records" in done.stdout
    assert "5 applied" in done.stdout
    # crm/1001, zendesk/T-77 and webchat/c-9 are one person.
    answer = idlink.resolve(account, "email", "john@home.example")
    assert answer.status == identity_pb2.RESOLVE_STATUS_FOUND
    assert {(c.type, c.value, c.source) for c in answer.customer.contacts} == {
        ("phone", "+15551234567", ""),
        ("email", "john.smith@company.com", ""),
        ("id", "CRM-1001", "salesforce"),
        ("email", "john@home.example", ""),
    }
    other = idlink.resolve(account, "phone", "+420123456789")
    assert {c.value for c in other.customer.contacts} == {
        "+420123456789",
        "petr@firma.cz",
        "CRM-1003",
    }


def test_ingest_json_lines_then_resolve(server, token, account, idlink, tmp_path):
    lines = [
        {
            "source": "crm",
            "record_id": "1",
            "observed_at": "2024-05-01T09:30:00Z",
            "contacts": [
                {"type": "phone", "value": "+1 555 000 1111"},
                {"type": "id", "value": "C-1", "source": "salesforce"},
            ],
        },
        {
            "source": "shop",
            "record_id": "o-5",
            "observed_at": 1714555900,
            "contacts": [{"type": "email", "value": "Z@Y.com"}, {"type": "id", "value": "C-1"}],
            "deleted": False,
        },
    ]
    path = tmp_path / "records.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    done = ingest(server, token, account, path)
    assert done.returncode == 0, done.stderr
    assert "ingested 2 records" in done.stdout
    # The second record's id has the record's source (shop): another contact than C-1 of salesforce.
    answer = idlink.resolve(account, "id", "C-1", "salesforce")
    assert {c.value for c in answer.customer.contacts} == {"+15550001111", "C-1"}
    answer = idlink.resolve(account, "email", "z@y.com")
    assert {(c.value, c.source) for c in answer.customer.contacts} == {
        ("z@y.com", ""),
        ("C-1", "shop"),
    }


def test_format_is_detected_from_the_content(server, token, account, tmp_path):
    path = tmp_path / "export.txt"
    path.write_text(
        '{"source": "crm", "record_id": "1", "contacts": [{"type": "device", "value": "d"}]}\n'
    )
    done = ingest(server, token, account, path)
    assert done.returncode == 0, done.stderr
    assert "ingested 1 records" in done.stdout


def test_a_bad_line_is_named_and_nothing_is_sent(server, token, account, idlink, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "source,record_id,observed_at,phone,email\n"
        "crm,1,2024-05-01T09:30:00Z,+15552220001,ok@x.com\n"
        "crm,2,yesterday,+15552220002,\n"
        "crm,3,,,\n"
    )
    done = ingest(server, token, account, path)
    assert done.returncode == 1
    assert f"{path}:3: observed_at 'yesterday' is neither RFC 3339" in done.stderr
    assert f"{path}:4: the record has no contacts" in done.stderr
    assert "nothing was sent" in done.stderr
    answer = idlink.resolve(account, "email", "ok@x.com")
    assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND


def test_bad_json_line_is_named(server, token, account, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"source": "crm", "record_id": "1", "contacts": [{"type": "phone", "value": "+15551"}]}\n'
        '{"source": "crm", "record_id": "2", "contact": []}\n'
        "{not json\n"
    )
    done = ingest(server, token, account, path)
    assert done.returncode == 1
    assert f"{path}:2: unknown field 'contact'" in done.stderr
    assert f"{path}:3: not valid JSON" in done.stderr


def test_a_record_the_server_refuses_names_its_line(server, token, account, tmp_path):
    path = tmp_path / "fax.csv"
    path.write_text("source,record_id,phone,fax\ncrm,1,+15553330001,\ncrm,2,,+15553330002\n")
    done = ingest(server, token, account, path)
    assert done.returncode == 1
    assert f"{path}:3: the server refused the record: unknown key type 'fax'" in done.stderr


def test_resolve_prints_the_customer_and_exits_0(server, token, account, idlink):
    linked = idlink.link(
        account, "crm", "1", [("phone", "+1 555 444 0001"), ("email", "Ann@x.com")]
    )
    done = resolve(server, token, account, "email", "ANN@x.com")
    assert done.returncode == 0, done.stderr
    assert "status:       FOUND" in done.stdout
    assert f"customer pid: {linked.customer.customer_pid} (known)" in done.stdout
    assert "contacts (2):" in done.stdout
    assert "+15554440001" in done.stdout


def test_resolve_not_found_exits_3_with_suggestions(server, token, account, idlink):
    linked = idlink.link(account, "crm", "1", [("phone", "+15554440002")])
    done = resolve(server, token, account, "phone", "555 444 0002")
    assert done.returncode == 3, done.stderr
    assert "status:       NOT_FOUND" in done.stdout
    assert linked.customer.customer_pid in done.stdout
    assert "NATIONAL_NUMBER: +15554440002" in done.stdout


def test_resolve_create_exits_0(server, token, account):
    done = resolve(server, token, account, "--create", "device", "web-7")
    assert done.returncode == 0, done.stderr
    assert "status:       CREATED" in done.stdout
    assert "(anonymous)" in done.stdout


def test_resolve_invalid_contact_or_request_exits_2(server, token, account):
    invalid = resolve(server, token, account, "phone", "12")
    assert invalid.returncode == 2
    assert "status:       INVALID" in invalid.stdout
    assert "reason:" in invalid.stdout
    unknown = resolve(server, token, account, "fax", "12")
    assert unknown.returncode == 2
    assert "INVALID_ARGUMENT" in unknown.stderr
    assert "contact.type" in unknown.stderr


def test_a_refused_token_exits_1(server, account):
    resolved = resolve(server, "idl_not-a-key", account, "email", "a@x.com")
    assert resolved.returncode == 1
    assert "UNAUTHENTICATED" in resolved.stderr
    ingested = ingest(server, "idl_not-a-key", account, EXAMPLE)
    assert ingested.returncode == 1
    assert "refused the token (UNAUTHENTICATED)" in ingested.stderr
