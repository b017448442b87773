"""The engine without a network: resolve against raw LMDB gets, ingest against raw puts."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time

import lmdb

from benchmarks.report import Entry, entry, median_rate
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import AccountPolicy
from idlink.security.crypto import open_store
from idlink.store.serving import PROBE_KEY

ACCOUNT = "bench"
RESOLVE_NAME = "engine resolve (no network), nothing cached"
SERVED_RESOLVE_NAME = (
    "engine resolve (no network), repeat look-ups with bookkeeping commits every 50 ms"
)


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

        def resolve_cold() -> int:
            # A new engine has an empty serving cache (docs/serving.md): every first
            # look-up of a key reads and opens the store.
            fresh = IdentityEngine(store, b"k" * 32)
            for key in keys:
                fresh.resolve(ACCOUNT, key)
            return len(keys)

        def resolve_served() -> int:
            # As served: the audit log flushes every 50 ms (a bookkeeping commit, which
            # moves the snapshot but not the data version: docs/serving.md).
            stop = threading.Event()

            def flusher() -> None:
                while not stop.wait(0.05):
                    store.write(lambda txn: txn.put_meta(PROBE_KEY, b"x"), bookkeeping=True)

            thread = threading.Thread(target=flusher)
            thread.start()
            try:
                return resolve_all()
            finally:
                stop.set()
                thread.join()

        cold_rate = median_rate(resolve_cold, repeats)
        resolve_rate = median_rate(resolve_all, repeats)
        served_rate = median_rate(resolve_served, repeats)
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
    # The cold figure carries the target: a served store changes under the cache (each
    # audit flush is a commit), so a real call is validated by a replay, between the two.
    out.append(
        entry(
            RESOLVE_NAME,
            cold_rate,
            "resolves/s",
            "raw py-lmdb random get, same key count",
            get_rate,
            target=0.2,
        )
    )
    out.append(
        entry(
            "engine resolve (no network), answers cached at the same snapshot",
            resolve_rate,
            "resolves/s",
            "raw py-lmdb random get, same key count",
            get_rate,
        )
    )
    out.append(
        entry(
            SERVED_RESOLVE_NAME,
            served_rate,
            "resolves/s",
            "raw py-lmdb random get, same key count",
            get_rate,
        )
    )
    # Late records in the dense capped graph, and growth to 1M records (smoke: small).
    smoke = records < 100_000
    out += bench_late(2_000 if smoke else 7_000, 1_000 if smoke else 3_000, 5 if smoke else 40)
    from benchmarks import bench_scale

    out += bench_scale.bench_growth(smoke)
    return out


# -- late records in a dense, capped graph (docs/design.md "Known cost") --------------------

DENSE_T0 = 1_700_000_000_000_000
DENSE_STEP_US = 1_000_000


def dense_capped_records(
    count: int = 7_000, contacts: int = 3_000, placeholders: int = 12, seed: int = 3
) -> list[RecordInput]:
    """A CRM export with placeholder values: dense, and held in shape by the cap.

    ``contacts`` contacts: ``placeholders`` placeholder emails (``hub0@x.com``,
    as ``no@email.com`` is in real exports) and one email per person. Each
    record names a person, in 1 of 10 another person (a household, a typo),
    and in 6 of 10 a placeholder. Every placeholder ends up with hundreds of
    connections and, by the default cap (100 contacts, 20 connections), is
    isolated once its customer would pass the cap; until then it glues
    customers together. Without cutting regions a late record replays nearly
    every contact (all of them are within two records of a placeholder).
    """
    rng = random.Random(seed)
    people = contacts - placeholders
    out = []
    for i in range(count):
        named = [ContactKey("email", f"p{rng.randrange(people)}@x.com")]
        if rng.random() < 0.1:
            named.append(ContactKey("email", f"p{rng.randrange(people)}@x.com"))
        if rng.random() < 0.6:
            named.append(ContactKey("email", f"hub{rng.randrange(placeholders)}@x.com"))
        out.append(RecordInput("crm", str(i), named, DENSE_T0 + i * DENSE_STEP_US))
    return out


def _one_record_ms(engine: IdentityEngine, records: list[RecordInput]) -> tuple[float, float]:
    """Median and mean milliseconds of one record sent alone (its own durable write)."""
    times = []
    for record in records:
        start = time.perf_counter()
        engine.ingest(ACCOUNT, [record])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, statistics.mean(times) * 1e3


def late_records(
    count: int, contacts: int, placeholders: int, at: float, seed: int, prefix: str
) -> list[RecordInput]:
    """Records of known people, observed at ``at`` (a fraction) of the dense graph's timeline."""
    rng = random.Random(seed)
    people = contacts - placeholders
    out = []
    for j in range(count):
        named = [ContactKey("email", f"p{rng.randrange(people)}@x.com")]
        if rng.random() < 0.6:
            named.append(ContactKey("email", f"hub{rng.randrange(placeholders)}@x.com"))
        observed = DENSE_T0 + int((at + 0.001 * j) * 7_000) * DENSE_STEP_US + 1
        out.append(RecordInput("crm", f"{prefix}{j}", named, observed))
    return out


def bench_late(records: int, contacts: int, samples: int) -> list[Entry]:
    """One late record against one fresh record, each alone, durable, in the dense capped graph."""
    placeholders = 12
    data = dense_capped_records(records, contacts, placeholders)
    with tempfile.TemporaryDirectory() as folder, open_store(folder, durable=True) as store:
        engine = IdentityEngine(store, b"k" * 32)
        engine.set_account_policy(ACCOUNT, AccountPolicy())
        ingest_all(engine, data)
        rng = random.Random(8)
        people = contacts - placeholders
        fresh = [
            RecordInput(
                "crm",
                f"new{j}",
                [
                    ContactKey("email", f"p{rng.randrange(people)}@x.com"),
                    ContactKey("email", f"hub{rng.randrange(placeholders)}@x.com"),
                ],
                DENSE_T0 + (records + 1 + j) * DENSE_STEP_US,
            )
            for j in range(samples)
        ]
        fresh_ms, fresh_mean = _one_record_ms(engine, fresh)
        # Late by about 5% of the timeline: after the placeholders were isolated.
        late_ms, late_mean = _one_record_ms(
            engine, late_records(samples, contacts, placeholders, 0.93, 21, "late")
        )
        # Older than the placeholders' isolation: their early records are replayed.
        early_ms, _ = _one_record_ms(
            engine, late_records(max(3, samples // 4), contacts, placeholders, 0.02, 22, "early")
        )
    name = f"one late record, dense capped graph ({records:,} records over {contacts:,} contacts)"
    return [
        entry(
            f"{name}, median (mean {late_mean:,.1f} ms, fresh mean {fresh_mean:,.1f} ms)",
            late_ms,
            "ms",
            "one fresh record, same graph",
            fresh_ms,
            target=1 / 20,
            lower_is_better=True,
        ),
        entry(
            name.replace("late record", "very late record (before the placeholders' isolation)"),
            early_ms,
            "ms",
            "one fresh record, same graph",
            fresh_ms,
            lower_is_better=True,
        ),
    ]
