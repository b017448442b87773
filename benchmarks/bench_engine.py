"""The engine without a network: resolve against raw LMDB gets, ingest against raw puts."""

from __future__ import annotations

import os
import random
import tempfile

import lmdb

from benchmarks.report import Entry, entry, median_rate
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.security.crypto import open_store

ACCOUNT = "bench"


def make_records(count: int, seed: int = 11) -> list[RecordInput]:
    """Records of 2-3 contacts, as a CRM export looks: mostly distinct people, some shared keys."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        person = rng.randrange(count)
        contacts = [
            ContactKey("phone", f"+1415{person:07d}"),
            ContactKey("email", f"user{person}@example.com"),
        ]
        if i % 2:
            contacts.append(ContactKey("id", f"C{i}", "crm"))
        out.append(RecordInput("crm", str(i), contacts, 1_700_000_000_000_000 + i))
    return out


def ingest_all(engine: IdentityEngine, records: list[RecordInput], batch: int = 1000) -> int:
    for i in range(0, len(records), batch):
        engine.ingest(ACCOUNT, records[i : i + batch])
    return len(records)


def raw_puts(path: str, count: int, durable: bool, batch: int = 1000) -> int:
    env = lmdb.open(path, map_size=1 << 32, sync=durable, metasync=durable)
    rng = random.Random(5)
    for start in range(0, count, batch):
        with env.begin(write=True) as txn:
            for _ in range(min(batch, count - start)):
                txn.put(rng.randbytes(20), rng.randbytes(100))
    env.close()
    return count


def bench_engine(records: int, resolves: int, repeats: int) -> list[Entry]:
    out = []
    data = make_records(records)
    contacts_per_record = sum(len(r.contacts) for r in data) / len(data)

    # Ingest with durable commits, against raw batched puts with the same sync setting.
    def ingest_once() -> int:
        with tempfile.TemporaryDirectory() as folder, open_store(folder, durable=True) as store:
            return ingest_all(IdentityEngine(store, b"k" * 32), data)

    def raw_once() -> int:
        with tempfile.TemporaryDirectory() as folder:
            return raw_puts(folder, records, durable=True)

    out.append(
        entry(
            f"engine ingest {records // 1000}k records ({contacts_per_record:.1f} contacts each)",
            median_rate(ingest_once, repeats),
            "records/s",
            "raw py-lmdb batched random put, durable",
            median_rate(raw_once, repeats),
            target=0.3,
        )
    )

    # Resolve of known contacts against raw random gets on a store of the same size.
    with tempfile.TemporaryDirectory() as folder, open_store(folder, durable=False) as store:
        engine = IdentityEngine(store, b"k" * 32)
        ingest_all(engine, data)
        rng = random.Random(9)
        keys = [rng.choice(data).contacts[0] for _ in range(resolves)]

        def resolve_all() -> int:
            for key in keys:
                engine.resolve(ACCOUNT, key)
            return len(keys)

        resolve_rate = median_rate(resolve_all, repeats)
    with tempfile.TemporaryDirectory() as folder:
        env = lmdb.open(folder, map_size=1 << 32, sync=False)
        rng = random.Random(2)
        stored = [rng.randbytes(20) for _ in range(records * 3)]
        with env.begin(write=True) as txn:
            for k in stored:
                txn.put(k, os.urandom(100))
        probe = [rng.choice(stored) for _ in range(resolves)]

        def gets() -> int:
            with env.begin() as txn:
                for k in probe:
                    txn.get(k)
            return len(probe)

        get_rate = median_rate(gets, repeats)
        env.close()
    out.append(
        entry(
            "engine resolve (no network)",
            resolve_rate,
            "resolves/s",
            "raw py-lmdb random get, same key count",
            get_rate,
            target=0.3,
        )
    )
    return out
