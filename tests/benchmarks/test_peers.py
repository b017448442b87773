"""The benchmark's peers compute what they claim: the figures are only worth their checks.

The shared records (benchmarks/datasets.py), the DuckDB large-star/small-star
query and Splink against scipy's connected components, the Redis look-ups
against the customers they were loaded from, and the check that compares a
real idlink server with the plain components, which must be able to fail.
Each peer is skipped where its package (the bench extra) or redis-server is
missing.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("scipy")

from benchmarks.datasets import (  # noqa: E402
    PLACEHOLDER_EMAIL,
    contact_of,
    crm_records,
    same_partition,
)


def _table(rows: list[dict[str, str]]):
    """Rows as the Arrow table a peer's worker reads from the CSV."""
    pa = pytest.importorskip("pyarrow")
    columns = ("source", "record_id", "observed_at", "phone", "email", "id")
    table = pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in columns})
    return table.append_column("rid", pa.array(np.arange(len(rows), dtype=np.int64)))


def _random_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        row = {"source": rng.choice(["crm", "zendesk"]), "record_id": str(i)}
        row["phone"] = f"+1555{rng.randrange(n):07d}"
        if rng.random() < 0.7:
            row["email"] = f"u{rng.randrange(n)}@example.com"
        if rng.random() < 0.5:
            row["id"] = f"C{rng.randrange(n // 2 + 1)}"
        rows.append(row)
    return rows


def _path_rows(length: int) -> list[dict[str, str]]:
    """A chain phone0 - email0 - phone1 - email1 - ...: one customer, many rounds."""
    rows = []
    for i in range(length):
        rows.append({"source": "crm", "record_id": f"a{i}", "phone": f"p{i}", "email": f"e{i}"})
        rows.append({"source": "crm", "record_id": f"b{i}", "phone": f"p{i + 1}", "email": f"e{i}"})
    return rows


def test_same_partition_tells_a_relabelling_from_a_regrouping() -> None:
    a = np.array([0, 0, 1, 2, 2])
    assert same_partition(a, np.array([7, 7, 3, 9, 9]))
    assert not same_partition(a, np.array([7, 7, 7, 9, 9]))  # two groups merged
    assert not same_partition(a, np.array([7, 8, 3, 9, 9]))  # one group split
    assert not same_partition(a, np.array([7, 7, 3, 9]))


def test_the_csv_is_what_idlink_ingest_reads(tmp_path: Path) -> None:
    from idlink.client.records import read_records

    dataset = crm_records(300, cap_free=False)
    path = dataset.write_csv(tmp_path / "records.csv")
    parsed = [record for _, record, why in read_records(path, "csv") if not why]
    assert len(parsed) == len(dataset.records)
    for record, expected in zip(parsed, dataset.records, strict=True):
        assert (record.source, record.record_id) == (expected.source, expected.record_id)
        assert record.observed_at.ToMicroseconds() == expected.observed_at_us
        got = {contact_of(c) for c in record.contacts}
        assert got == {contact_of(c) for c in expected.contacts}


def test_the_cap_free_records_stay_under_the_cap_and_the_crm_like_ones_share_a_placeholder() -> (
    None
):
    cap_free = crm_records(4_000)
    assert cap_free.largest_component() <= 100
    assert all(c.value != PLACEHOLDER_EMAIL for r in cap_free.records for c in r.contacts)
    crm = crm_records(4_000, cap_free=False)
    # One record in 200 names the placeholder: those 20 people become one plain component
    # (their 20 phones, the placeholder, and their other records' contacts).
    hub = ("email", "", PLACEHOLDER_EMAIL)
    component = next(m for m in crm.customers().values() if hub in m)
    assert len(component) >= 21
    assert len(component) > cap_free.largest_component()
    assert crm.largest_component() == len(component)
    # Everything else is the cap-free generator's records, unchanged.
    same = sum(a == b for a, b in zip(cap_free.records, crm.records, strict=True))
    assert same == len(cap_free.records) - 20


@pytest.mark.parametrize("rows", ["path", "random"])
def test_large_star_small_star_in_duckdb_gives_scipys_components(rows: str) -> None:
    pytest.importorskip("duckdb")
    from benchmarks.bench_bulk import _duckdb, _scipy

    rng = random.Random(5)
    tables = [_path_rows(300)] if rows == "path" else [_random_rows(rng, n) for n in (7, 60, 400)]
    for data in tables:
        table = _table(data)
        _, expected, _ = _scipy(table)
        _, found, rounds = _duckdb(table)
        assert same_partition(found, expected)
        assert rounds >= 1
        if rows == "path":
            assert len(np.unique(found)) == 1
            assert rounds > 3  # the chain needs several rounds to become one star


def test_splink_deterministic_linking_gives_scipys_components() -> None:
    pytest.importorskip("splink")
    from benchmarks.bench_bulk import _scipy, _splink

    rng = random.Random(8)
    table = _table(_random_rows(rng, 300))
    _, expected, _ = _scipy(table)
    _, found, _ = _splink(table)
    assert same_partition(found, expected)


def test_the_scipy_worker_keys_ids_by_source() -> None:
    from benchmarks.bench_bulk import _scipy

    rows = [
        {"source": "crm", "record_id": "1", "phone": "p1", "id": "1234"},
        {"source": "zendesk", "record_id": "2", "phone": "p2", "id": "1234"},
        {"source": "crm", "record_id": "3", "phone": "p3", "id": "1234"},
    ]
    _, labels, _ = _scipy(_table(rows))
    assert labels[0] == labels[2] != labels[1]  # SPEC 2.3: id 1234 of two sources, two contacts


def test_redis_look_ups_return_the_members_of_each_customer(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make bench installs it)")
    from benchmarks import bench_redis

    dataset = crm_records(500)
    customers = dataset.customers()
    by_contact = {c: members for members in customers.values() for c in members}
    contacts = [contact_of(r.contacts[0]) for r in dataset.records[:50]]
    keys = [bench_redis.contact_key(c) for c in contacts]

    async def look_ups(port: int):
        import redis.asyncio as aioredis

        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            one = [await bench_redis.look_up(client, k) for k in keys]
            many = await bench_redis.look_up_many(client, keys)
            with pytest.raises(LookupError):
                await bench_redis.look_up(client, b"c:phone::+15550000000")
            return one, many
        finally:
            await client.aclose()

    with bench_redis.redis_server(tmp_path) as port:
        written = bench_redis.load_customers(port, customers, 3)
        one, many = asyncio.run(look_ups(port))
    assert written == len(customers) + sum(len(m) for m in customers.values())
    for contact, single, batched in zip(contacts, one, many, strict=True):
        assert sorted(map(tuple, single)) == sorted(by_contact[contact])
        assert batched == single
    assert not list(tmp_path.glob("*.rdb"))  # no persistence


def test_the_served_check_passes_on_idlink_and_fails_on_a_wrong_partition(
    tmp_path: Path,
) -> None:
    from benchmarks.bench_bulk import ACCOUNT, check_served
    from idlink.client.ingest import ingest_file
    from tests.server import Server, make_token

    dataset = crm_records(400)
    path = dataset.write_csv(tmp_path / "records.csv")
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data).start()
    try:
        token = make_token(data, ACCOUNT)
        assert ingest_file(server.target, token, ACCOUNT, path, 100) == 0
        assert check_served(server.target, token, dataset) == ""

        # The same records, but the check expects two people merged, or one split.
        first, second = [c for c in dataset.customers().values() if len(c) >= 2][:2]
        for expected in ({0: first + second}, {0: first[:1], 1: first[1:]}):
            wrong = crm_records(400)
            wrong.customers = lambda expected=expected: expected  # type: ignore[method-assign]
            assert "contacts served" in check_served(server.target, token, wrong)
    finally:
        server.stop()
