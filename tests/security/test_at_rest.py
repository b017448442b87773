"""Encryption at rest, key rotation with a server running, erasure that leaves no trace (SPEC 8)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.erasure import erase_customer, export_customer
from idlink.errors import NotFound
from idlink.security.apikeys import create_key
from idlink.security.crypto import KEY_FILE, load_key_file, open_store, rotate_key
from idlink.security.secrets import load_master_secret
from idlink.v1 import admin_pb2, common_pb2, identity_pb2, profile_pb2
from tests.service.conftest import ServerProcess, key

from .conftest import Stubs, auth, link

PEOPLE = [
    ("+420 777 123 456", "alena.nova@example.cz", "Alena"),
    ("+1 (212) 555-0187", "bob.stone@example.com", "Bobby"),
    ("+44 20 7946 0958", "carla.m@example.co.uk", "Carla"),
]


def raw_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.endswith(".mdb"))


def needles(phone: str, email: str) -> list[bytes]:
    digits = "".join(ch for ch in phone if ch.isdigit())
    national = (
        digits[3:]
        if phone.startswith("+420")
        else digits[2:]
        if phone.startswith("+44")
        else digits[1:]
    )
    return [digits.encode(), national.encode(), email.encode(), email.split("@")[0].encode()]


def fill(engine: IdentityEngine, account: str) -> list[bytes]:
    customers = []
    for i, (phone, email, _) in enumerate(PEOPLE):
        result = engine.link(
            account,
            RecordInput(
                "crm", f"r{i}", [ContactKey("phone", phone), ContactKey("email", email)], 1_000 + i
            ),
        )
        engine.record_engagement(
            account,
            ContactKey("email", email),
            occurred_at_us=2_000 + i,
            channel="email",
            summary=f"asked about the invoice, reachable at {email}",
            attributes={"callback": phone},
        )
        customers.append(result.customer_pid)
    return customers


def test_a_dump_of_the_store_holds_no_phone_number_or_email(tmp_path):
    data = tmp_path / "data"
    with open_store(data) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        customers = fill(engine, "acme")
        view = engine.get_customer("acme", customers[0])
        assert {c.value for c in view.contacts} == {"+420777123456", "alena.nova@example.cz"}
        national = engine.resolve("acme", ContactKey("phone", "777123456"))
        assert [s.customer_pid for s in national.suggestions] == [customers[0]]
    dump = raw_bytes(data)
    for phone, email, _ in PEOPLE:
        for needle in needles(phone, email):
            assert needle not in dump, needle
    assert (data / KEY_FILE).stat().st_mode & 0o777 == 0o600


@pytest.fixture
def running(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def test_rotation_with_the_server_running_keeps_every_value_readable(running):
    account = "rotate"
    token = create_key(running.data, account, "admin")
    stubs = Stubs(running.target)
    try:
        pids = []
        for i, (phone, email, name) in enumerate(PEOPLE):
            customer = link(
                stubs, token, account, f"r{i}", key("phone", phone), key("email", email)
            ).customer
            pids.append(customer.customer_pid)
            update = profile_pb2.UpdateCustomerRequest(
                account=account,
                customer=common_pb2.Customer(customer_pid=customer.customer_pid),
                update_mask=field_mask_pb2.FieldMask(paths=["attributes.first_name"]),
            )
            update.customer.attributes["first_name"].string_value = name
            stubs.profile.UpdateCustomer(update, metadata=auth(token))
            stubs.profile.RecordEngagement(
                profile_pb2.RecordEngagementRequest(
                    account=account,
                    contact=key("email", email),
                    channel="chat",
                    summary=f"hello {name}",
                ),
                metadata=auth(token),
            )
        stop_writing = threading.Event()
        written: list[str] = []

        def keep_writing() -> None:
            n = 0
            while not stop_writing.is_set():
                email = f"during{n}@example.org"
                link(stubs, token, account, f"d{n}", key("email", email))
                written.append(email)
                n += 1
                time.sleep(0.02)

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            with open_store(running.data, multi_process=True) as store:
                counts = rotate_key(store, batch=2)
        finally:
            stop_writing.set()
            writer.join()
        assert counts["version"] == 2 and counts["contacts"] >= 6
        keys = load_key_file(running.data / KEY_FILE)
        assert keys["current"] == 2 and keys["retired"] == [1]

        for pid, (_, email, name) in zip(pids, PEOPLE, strict=True):
            got = stubs.profile.GetCustomer(
                profile_pb2.GetCustomerRequest(account=account, customer_pid=pid),
                metadata=auth(token),
            )
            assert email in {c.value for c in got.contacts}
            assert got.attributes["first_name"].string_value == name
            journey = stubs.profile.ListJourney(
                profile_pb2.ListJourneyRequest(account=account, customer_pid=pid),
                metadata=auth(token),
            )
            assert [e.summary for e in journey.engagements] == [f"hello {name}"]
        for email in written:
            answer = stubs.identity.Resolve(
                identity_pb2.ResolveRequest(account=account, contact=key("email", email)),
                metadata=auth(token),
            )
            assert answer.status == identity_pb2.RESOLVE_STATUS_FOUND
    finally:
        stubs.close()
    # Nothing sealed under version 1 is left once the rotation is done.
    from idlink.security.crypto import MAGIC

    with open_store(running.data, multi_process=True) as store, store._env.begin() as raw:
        for db in ("contacts", "customers", "records"):
            values = [bytes(v) for _, v in raw.cursor(db=store._dbs[db])]
            assert values, db
            assert {(v[:1], v[1]) for v in values} == {(MAGIC, 2)}, db


def test_erasure_leaves_no_trace_in_a_compacted_copy(tmp_path):
    data = tmp_path / "data"
    with open_store(data) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        customers = fill(engine, "acme")
        # A record shared with someone who stays: only the erased contact leaves it.
        engine.link(
            "acme",
            RecordInput(
                "crm",
                "shared",
                [ContactKey("email", PEOPLE[0][1]), ContactKey("id", "T-9", "zendesk")],
                5_000,
            ),
        )
        victim = engine.get_customer("acme", customers[0])
        with store._env.begin() as raw:
            sealed = [
                bytes(raw.get(b"\0\0\0\1" + c.pid, db=store._dbs["contacts"]))
                for c in victim.contacts
            ]
        exported = export_customer(engine, "acme", customers[0])
        json.dumps(exported)
        assert {c["value"] for c in exported["contacts"]} >= {
            "+420777123456",
            "alena.nova@example.cz",
            "T-9",
        }
        assert exported["engagements"] and exported["records"]

        result = erase_customer(engine, "acme", customers[0], "dpo")
        assert result.contacts == 3 and result.engagements == 1

        with pytest.raises(NotFound) as caught:
            export_customer(engine, "acme", customers[0])
        assert caught.value.reason == "ERASED"
        assert engine.resolve("acme", ContactKey("email", PEOPLE[0][1])).status == 3  # NOT_FOUND
        assert engine.resolve("acme", ContactKey("phone", "777123456")).suggestions == []
        kinds = [e.kind for e in engine.changes_after("acme", 0)]
        assert kinds[-1] == "erased"
        others = engine.get_customer("acme", customers[1])
        assert {c.value for c in others.contacts} == {"+12125550187", "bob.stone@example.com"}
        store.backup(tmp_path / "compacted", compact=True)
    dump = raw_bytes(tmp_path / "compacted")
    for blob in sealed:
        assert blob not in dump
    for contact in victim.contacts:
        assert contact.pid not in dump
    for needle in needles(PEOPLE[0][0], PEOPLE[0][1]):
        assert needle not in dump


def test_erasure_through_the_api(running):
    account = "erase"
    token = create_key(running.data, account, "admin")
    stubs = Stubs(running.target)
    try:
        customer = link(
            stubs, token, account, "r1", key("phone", "+15550009999"), key("email", "gone@x.com")
        ).customer
        erased = stubs.admin.EraseCustomer(
            admin_pb2.EraseCustomerRequest(account=account, customer_pid=customer.customer_pid),
            metadata=auth(token),
        )
        assert erased.contacts_erased == 2 and erased.records_deleted == 1
        with pytest.raises(grpc.RpcError) as caught:
            stubs.profile.GetCustomer(
                profile_pb2.GetCustomerRequest(account=account, customer_pid=customer.customer_pid),
                metadata=auth(token),
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert dict(caught.value.trailing_metadata())["idlink-error-reason"] == "ERASED"
        feed = stubs.profile.WatchChanges(
            profile_pb2.WatchChangesRequest(account=account), metadata=auth(token), timeout=2
        )
        kinds = []
        with pytest.raises(grpc.RpcError):
            for response in feed:
                kinds.extend(e.kind for e in response.events)
        assert kinds[-1] == common_pb2.CHANGE_KIND_ERASED
    finally:
        stubs.close()


# A record id that is a phone number, in the forms a dump might hold it, and labels.
PHONE_RECORD_ID = "+44 7700 900123"
RECORD_ID_FORMS = [b"+44 7700 900123", b"447700900123", b"7700 900123", b"7700900123"]
LABELS = ["VIP-gold-7731", "debtor:high-priority"]


def where_found(data: Path, needles: list[bytes]) -> dict[bytes, list[str]]:
    """Where each needle occurs in the raw store: the file (free pages included) and every entry."""
    found: dict[bytes, list[str]] = {needle: [] for needle in needles}
    raw = (data / "data.mdb").read_bytes()
    for needle in needles:
        if needle in raw:
            found[needle].append(f"data.mdb at byte {raw.index(needle)}")
    import lmdb

    from idlink.store.txn import SUBDATABASES

    env = lmdb.open(str(data), readonly=True, lock=False, max_dbs=len(SUBDATABASES) + 1)
    try:
        with env.begin() as txn:
            for name in SUBDATABASES:
                db = env.open_db(name.encode(), txn=txn, create=False)
                for key, value in txn.cursor(db=db):
                    for needle in needles:
                        for part, content in (("key", key), ("value", value)):
                            if needle in bytes(content):
                                found[needle].append(f"{name} {part} of {bytes(key)[:24].hex()}")
    finally:
        env.close()
    return found


def test_a_phone_number_record_id_and_labels_are_not_in_the_store_in_clear(tmp_path):
    # SPEC 8: the dump of the store shows no phone number in clear; a record id
    # can be one, and labels (VIP, debtor) are profile data (docs/security.md).
    account = "sealed-ids"
    data = tmp_path / "data"
    token = create_key(data, account, "admin")
    server = ServerProcess(data).start()
    stubs = Stubs(server.target)
    try:
        dana = [key("email", "dana@example.org"), key("phone", "+1 (415) 555-0142")]
        linked = link(stubs, token, account, PHONE_RECORD_ID, *dana)
        pid = linked.customer.customer_pid
        record = identity_pb2.Record(source="desk", record_id=PHONE_RECORD_ID, contacts=dana[:1])
        acks = list(
            stubs.identity.Ingest(
                iter([identity_pb2.IngestRequest(account=account, seq=1, records=[record])]),
                metadata=auth(token),
                timeout=10,
            )
        )
        assert acks[-1].committed_seq == 1
        update = profile_pb2.UpdateCustomerRequest(
            account=account,
            customer=common_pb2.Customer(customer_pid=pid),
            add_labels=LABELS,
        )
        stubs.profile.UpdateCustomer(update, metadata=auth(token))
        got = stubs.profile.GetCustomer(
            profile_pb2.GetCustomerRequest(account=account, customer_pid=pid), metadata=auth(token)
        )
        assert sorted(got.labels) == sorted(LABELS)
        explained = stubs.identity.ExplainLink(
            identity_pb2.ExplainLinkRequest(account=account, contact=dana[0], other=dana[1]),
            metadata=auth(token),
        )
        assert explained.linked
        assert [hop.record_id for hop in explained.hops] == [PHONE_RECORD_ID]  # admin: in clear
    finally:
        stubs.close()
        assert server.stop() == 0, server.log()[-3000:]
    # What the store holds in clear, reported per sub-database and key.
    found = where_found(data, [*RECORD_ID_FORMS, *(label.encode() for label in LABELS)])
    leaks = {needle.decode(): places for needle, places in found.items() if places}
    print(f"in clear in the store: {leaks or 'no record id and no label'}")
    assert not leaks, f"found in clear: {leaks}"
    # The search itself finds what is in clear: the account's name is in its meta key.
    assert where_found(data, [account.encode()])[account.encode()]


def compact(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlink", "compact", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compact_drops_an_erased_customers_contact_pids_from_the_free_pages(tmp_path):
    data = tmp_path / "data"
    with open_store(data) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        customers = fill(engine, "acme")
        victim = engine.get_customer("acme", customers[0])
        erase_customer(engine, "acme", customers[0], "dpo")
    pids = [c.pid for c in victim.contacts]
    # Erasure removed every entry, but LMDB only freed their pages.
    assert any(pid in (data / "data.mdb").read_bytes() for pid in pids)

    server = ServerProcess(data).start()
    try:
        refused = compact(data)
        assert refused.returncode == 1
        assert f"in use by pid {server.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        assert server.stop() == 0

    done = compact(data)
    assert done.returncode == 0, done.stderr
    assert "free pages dropped" in done.stdout
    dump = (data / "data.mdb").read_bytes()
    assert [pid for pid in pids if pid in dump] == []
    for needle in needles(PEOPLE[0][0], PEOPLE[0][1]):
        assert needle not in dump
    assert (data / "data.mdb").stat().st_mode & 0o777 == 0o600
    checked = subprocess.run(
        [sys.executable, "-m", "idlink", "check", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "store ok" in checked.stdout
    with open_store(data) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        others = engine.get_customer("acme", customers[1])
        assert {c.value for c in others.contacts} == {"+12125550187", "bob.stone@example.com"}
        assert engine.resolve("acme", ContactKey("email", PEOPLE[0][1])).status == 3  # NOT_FOUND
