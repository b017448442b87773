"""``idlink load --records`` against the online engine: the same records give the same store.

Two stores with one master key (so one account secret and the same contact
PIDs): the online engine ingests the records (in canonical order in one
batch, or shuffled in random batches), and ``generation_from_records`` +
``write_generation`` loads the same records, written as a file, into an
empty account. Every stored contact, record, index entry, edge, customer,
isolated and national entry must be equal field for field; customer PIDs
are mapped by membership and clock times are left out. The arrival counter
(``first_seen``) and the creation counter (``created_seq``) are compared
only against the canonical single-batch ingest: a shuffled ingest numbers
contacts and customers in the order they arrived.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idlink.domain.check import check_account
from idlink.domain.contacts import ContactKey, national_number
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_TRIM, AccountPolicy, KeyType
from idlink.generations import materialize, records_file
from idlink.security.crypto import open_store
from idlink.security.secrets import load_master_secret

ACCOUNT = "acme"
MASTER = bytes(range(32))
CAP = 6
ISOLATE_AT = 3
BASE_US = 1_700_000_000_000_000

# A small pool of contacts, so records share them: hubs over the cap, invalid
# and blocked values, a limited type (member, one per customer) and devices
# (reassignable, one per customer, so they move).
PHONES = [f"+1 555 010 {i:04d}" for i in range(8)] + ["000", "12", "+1 555 111 1111"]
EMAILS = [f"p{i}@example.com" for i in range(10)] + ["no@email.com", "bad-email"]
IDS = [str(i) for i in range(10)]
MEMBERS = [f"M{i}" for i in range(4)]
DEVICES = [f"dev-{i}" for i in range(4)]
SOURCES = ["crm", "web"]
COLUMNS = ["source", "record_id", "observed_at", "phone", "email", "id", "member", "device"]
DO_NOT_LINK = [ContactKey("email", "p9@example.com"), ContactKey("phone", "+1 555 010 0007")]


def configure(engine: IdentityEngine) -> None:
    engine.set_account_policy(ACCOUNT, AccountPolicy(CAP, ISOLATE_AT))
    engine.put_key_type(ACCOUNT, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))
    engine.put_key_type(
        ACCOUNT,
        KeyType("device", NORMALIZER_TRIM, reassignable=True, anonymous=True, max_per_customer=1),
    )
    for key in DO_NOT_LINK:
        engine.set_contact_policy(ACCOUNT, key, do_not_link=True)


@contextmanager
def new_engine(folder: Path) -> Iterator[IdentityEngine]:
    folder.mkdir(mode=0o700)
    (folder / "master.key").write_bytes(MASTER)
    os.chmod(folder / "master.key", 0o600)
    with open_store(folder, durable=False) as store:
        yield IdentityEngine(store, load_master_secret(folder))


Row = dict[str, str]

row_strategy = st.fixed_dictionaries(
    {
        "source": st.sampled_from(SOURCES),
        "record_id": st.integers(0, 40).map(str),
        "observed_at": st.integers(0, 30).map(str),
        "phone": st.one_of(st.just(""), st.sampled_from(PHONES)),
        "email": st.one_of(st.just(""), st.sampled_from(EMAILS)),
        "id": st.one_of(st.just(""), st.sampled_from(IDS)),
        "member": st.one_of(st.just(""), st.just(""), st.sampled_from(MEMBERS)),
        "device": st.one_of(st.just(""), st.sampled_from(DEVICES)),
    }
).filter(lambda r: any(r[c] for c in ("phone", "email", "id", "member", "device")))


def _observed_us(row: Row) -> int:
    return BASE_US + int(row["observed_at"]) * 1_000_000


def write_csv(path: Path, rows: list[Row]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "observed_at": str(_observed_us(row) / 1_000_000)})
    return path


def write_jsonl(path: Path, rows: list[Row]) -> Path:
    with path.open("w") as out:
        for row in rows:
            contacts = [
                {"type": name, "value": row[name]}
                for name in ("phone", "email", "id", "member", "device")
                if row[name]
            ]
            data = {
                "source": row["source"],
                "record_id": row["record_id"],
                "observed_at": _observed_us(row) / 1_000_000,
                "contacts": contacts,
            }
            out.write(json.dumps(data) + "\n")
    return path


def record_inputs(rows: list[Row]) -> list[RecordInput]:
    """The rows as the online engine takes them, each (source, record_id) as its last version."""
    last: dict[tuple[str, str], RecordInput] = {}
    for row in rows:
        keys = [
            ContactKey(name, row[name], row["source"])
            for name in ("phone", "email", "id", "member", "device")
            if row[name]
        ]
        last[(row["source"], row["record_id"])] = RecordInput(
            row["source"], row["record_id"], keys, _observed_us(row)
        )
    return list(last.values())


@dataclass
class Stored:
    contacts: dict
    records: dict
    customers: dict
    index: dict
    edges: dict
    isolated: list
    national: dict
    counters: tuple[int, int]


def dump(engine: IdentityEngine, account: str = ACCOUNT) -> Stored:
    config = engine.account_config(account)
    with engine.read(account) as view:
        txn = view.txn
        contacts = dict(txn.iter_contacts())
        national = {}
        for pid, contact in contacts.items():
            key_type = config.key_types.get(contact.type) or KeyType(contact.type)
            number = national_number(key_type, contact.value)
            if number:
                national[pid] = pid in txn.pids_with_national(number)
        return Stored(
            contacts=contacts,
            records={(r.source, r.record_id): r for r in txn.iter_records()},
            customers=dict(txn.iter_customers()),
            index={pid: txn.record_keys_of(pid) for pid in contacts},
            edges={pid: sorted(txn.neighbours_of(pid)) for pid in contacts},
            isolated=sorted(txn.iter_isolated()),
            national=national,
            counters=(
                max((c.first_seen for c in contacts.values()), default=0),
                max((c.created_seq for _, c in txn.iter_customers()), default=0),
            ),
        )


def _copy(message, **cleared):
    copy = type(message)()
    copy.CopyFrom(message)
    for name, value in cleared.items():
        setattr(copy, name, value)
    return copy


def _customer(state, cleared: dict[str, object]):
    copy = _copy(state, **cleared)
    if copy.profile.ByteSize() == 0:
        copy.ClearField("profile")  # an empty profile copied on a split is no profile
    return copy


def assert_same_store(online: Stored, loaded: Stored, *, arrival: bool) -> None:
    assert set(online.contacts) == set(loaded.contacts)
    assert set(online.records) == set(loaded.records)
    assert len(online.customers) == len(loaded.customers)
    # Customer PIDs are mapped by membership: the customer of each contact.
    pid_map: dict[bytes, bytes] = {}
    for pid, contact in online.contacts.items():
        theirs = loaded.contacts[pid].customer_pid
        assert pid_map.setdefault(contact.customer_pid, theirs) == theirs, "partition differs"
    clocks = {"customer_pid": b"", "created_at_us": 0}
    if not arrival:
        clocks["first_seen"] = 0
    for pid, contact in online.contacts.items():
        assert _copy(contact, **clocks) == _copy(loaded.contacts[pid], **clocks), pid.hex()
    for key, record in online.records.items():
        assert _copy(record, stored_at_us=0) == _copy(loaded.records[key], stored_at_us=0), key
    customer_clocks: dict[str, object] = {"created_at_us": 0, "updated_at_us": 0}
    if not arrival:
        # How a shuffled ingest got there (the order of creation, the splits on
        # the way) is history, not a function of the records.
        customer_clocks.update(created_seq=0, split_from=b"")
    for pid, customer in online.customers.items():
        theirs = loaded.customers[pid_map[pid]]
        assert _customer(customer, customer_clocks) == _customer(theirs, customer_clocks)
    assert online.index == loaded.index
    assert online.edges == loaded.edges
    assert online.isolated == loaded.isolated
    assert online.national == loaded.national
    if arrival:
        assert online.counters == loaded.counters


def load_file(engine: IdentityEngine, path: Path) -> materialize.WriteReport:
    planned = materialize.generation_from_records(engine, ACCOUNT, path, progress=False)
    materialize.check_fits(engine, planned)
    return materialize.write_generation(engine, ACCOUNT, planned, progress=False, live_account=None)


def compare(rows: list[Row], *, fmt: str, shuffle: random.Random | None) -> None:
    with tempfile.TemporaryDirectory(prefix="idlink-materialize-") as folder:
        root = Path(folder)
        path = (write_csv if fmt == "csv" else write_jsonl)(root / f"records.{fmt}", rows)
        records = record_inputs(rows)
        with new_engine(root / "online") as online:
            configure(online)
            if shuffle is None:
                records.sort(key=lambda r: (r.observed_at_us, r.source, r.record_id))
                online.ingest(ACCOUNT, records, actor=materialize.DEFAULT_ACTOR)
            else:
                shuffle.shuffle(records)
                while records:
                    size = shuffle.randint(1, 7)
                    online.ingest(ACCOUNT, records[:size], actor=materialize.DEFAULT_ACTOR)
                    records = records[size:]
            expected = dump(online)
        with new_engine(root / "loaded") as loaded:
            configure(loaded)
            load_file(loaded, path)
            found = dump(loaded)
            report = check_account(loaded, ACCOUNT)
            assert report.ok, report.problems
        assert_same_store(expected, found, arrival=shuffle is None)


SETTINGS = settings(
    max_examples=int(os.environ.get("IDLINK_MATERIALIZE_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(rows=st.lists(row_strategy, min_size=1, max_size=40))
def test_load_equals_canonical_ingest(impl: str, rows: list[Row]) -> None:
    compare(rows, fmt="csv", shuffle=None)


@SETTINGS
@given(rows=st.lists(row_strategy, min_size=1, max_size=40), seed=st.integers(0, 1000))
def test_load_equals_shuffled_ingest(impl: str, rows: list[Row], seed: int) -> None:
    compare(rows, fmt="jsonl", shuffle=random.Random(seed))


def test_hub_over_the_cap_is_isolated(impl: str) -> None:
    """SPEC 3.3's example, small: one placeholder email on many records, each its own phone."""
    rows = [
        {
            "source": "crm",
            "record_id": str(i),
            "observed_at": str(i),
            "phone": f"+1 555 010 {i:04d}",
            "email": "no@email.com",
            "id": "",
            "member": "",
            "device": "",
        }
        for i in range(20)
    ]
    compare(rows, fmt="csv", shuffle=None)
    with tempfile.TemporaryDirectory() as folder, new_engine(Path(folder) / "d") as engine:
        configure(engine)
        report = load_file(engine, write_csv(Path(folder) / "r.csv", rows))
        assert report.rows["isolated"] == 1
        assert report.replayed_components == 1
        assert len(engine.partition(ACCOUNT)) == 21


def test_pure_python_prepare_gives_the_same_pids(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's contacts are hashed as ``prepare_contact`` hashes one (both twins)."""
    from idlink._native import _contacts_py
    from idlink.domain.contacts import prepare_contact

    monkeypatch.setattr(records_file, "_contacts", _contacts_py)
    with tempfile.TemporaryDirectory() as folder:
        path = write_csv(
            Path(folder) / "r.csv",
            [
                {
                    "source": "crm",
                    "record_id": "1",
                    "observed_at": "1",
                    "phone": " +1 (555) 010-0001 ",
                    "email": "John.Smith@Example.com",
                    "id": "A 1",
                    "member": "",
                    "device": "",
                }
            ],
        )
        with new_engine(Path(folder) / "d") as engine:
            config = engine.account_config(ACCOUNT)
            parsed = records_file.parse_file(path)
            prepared = records_file.prepare_entries(parsed, config, engine.secret(ACCOUNT))
            for i, name in enumerate(parsed.entry_type):
                key = ContactKey(name, parsed.entry_value[i], parsed.entry_source[i])
                one = prepare_contact(engine.secret(ACCOUNT), config, key)
                assert (prepared.pid[i], prepared.cleaned[i]) == (one.pid, one.cleaned)
