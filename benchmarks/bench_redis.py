"""The same customers served from Redis, read with redis-py: the look-up a user builds by hand.

``bench_grpc`` serves ``make_records(N)`` (benchmarks/datasets.py, seed
``SERVED_SEED``) from idlink. This group loads the same customers into a
``redis-server`` of its own (Debian's package; ``make bench`` installs it),
started on 127.0.0.1 on a free port with no persistence in a temporary
folder, and stopped by its PID at the end:

- ``c:<type>:<source>:<value>`` -> customer id (the source only for
  source-scoped types, SPEC 2.3);
- ``m:<customer id>`` -> the customer's members, a JSON list of
  ``[type, source, value]``.

The customers are the plain connected components of the records (scipy):
on this cap-free data set they are exactly idlink's (SPEC 3.1, 3.3; the bulk
group checks that equality on the same generator).

Figures, each beside redis-py's PING round trip with the same callers:

- single look-ups, CONCURRENCY callers on the asyncio client: GET the
  contact, then GET the members: two dependent round trips, as a user
  building the look-up by hand writes it (a pipeline cannot carry the second
  GET, whose key is the first one's answer);
- the same look-up as one Lua script (EVALSHA), for reference: one round trip;
- pipelines of 1,000 look-ups (one pipeline of 1,000 contact GETs, then one
  of the 1,000 member GETs), CONCURRENCY callers.

``against_idlink`` pairs them with bench_grpc's Resolve and BatchResolve
figures of the same run; idlink is not measured again here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.bench_grpc import BATCH_NAME, CONCURRENCY, _free_port, _median
from benchmarks.datasets import (
    SERVED_SEED,
    SIZES,
    SMOKE_SIZE,
    Contact,
    contact_of,
    crm_records,
    customer_ids,
)
from benchmarks.report import Entry, entry

# The records bench_grpc ingests and resolves (its ``ingest_records``), and the
# contacts it resolves: the first contact of its first RESOLVE_KEYS records.
SERVED_FULL = SIZES[-1]  # 1M records
RESOLVE_KEYS = 20_000
BATCH = 1_000
UNARY_NAME = f"Resolve unary, {CONCURRENCY} concurrent callers"  # bench_grpc's entry
SINGLE_NAME = f"Redis single look-ups, {CONCURRENCY} callers (GET contact, GET members)"
LUA_NAME = f"Redis single look-ups, {CONCURRENCY} callers, one Lua script"
PIPELINE_NAME = f"Redis pipelines of 1,000 look-ups, {CONCURRENCY} callers"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LOAD_CHUNK = 10_000
INSTALL_HINT = (
    "redis-server is not installed: the Redis figures are skipped "
    "(make bench installs it as root with apt-get install -y redis-server)"
)

# One round trip: the contact's customer, then its members.
_LOOK_UP_LUA = """
local customer = redis.call('GET', KEYS[1])
if not customer then return false end
return {customer, redis.call('GET', 'm:' .. customer)}
"""


def contact_key(contact: Contact) -> bytes:
    kind, source, value = contact
    return f"c:{kind}:{source}:{value}".encode()


@contextmanager
def redis_server(folder: Path) -> Iterator[int]:
    """A redis-server on 127.0.0.1 without persistence; yields its port, stops it by PID."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    port = _free_port()
    log = folder / "redis.log"
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", str(log)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server did not start: {tail}") from None
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def load_customers(port: int, customers: dict[int, list[Contact]], seed: int) -> int:
    """Write contact -> customer id and customer id -> members; the number of keys written."""
    import redis

    ids = customer_ids(list(customers), seed)
    written = 0
    with redis.Redis(host="127.0.0.1", port=port) as client:
        pipe = client.pipeline(transaction=False)
        pending: dict[bytes, bytes | str] = {}
        for label, members in customers.items():
            customer = ids[label]
            pending["m:" + customer] = json.dumps(members, separators=(",", ":"))
            for contact in members:
                pending[contact_key(contact)] = customer
            if len(pending) >= LOAD_CHUNK:
                pipe.mset(pending)
                written += len(pending)
                pending = {}
        if pending:
            pipe.mset(pending)
            written += len(pending)
        pipe.execute()
    return written


# -- the load generators: CONCURRENCY callers for ``seconds``, as bench_grpc._unary_load ------


async def _callers(port: int, work, items_per_call: int, seconds: float) -> float:
    """Run CONCURRENCY callers of ``work(client, i)`` for ``seconds``; items per second."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=port, max_connections=CONCURRENCY)
    calls = 0
    try:
        await client.ping()
        stop_at = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            nonlocal calls
            i = offset
            while time.perf_counter() < stop_at:
                await work(client, i)
                calls += 1
                i += CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    return calls * items_per_call / elapsed


async def look_up(client, key: bytes) -> list:
    """contact -> customer id -> members: two GETs."""
    customer = await client.get(key)
    if customer is None:
        raise LookupError(key)
    return json.loads(await client.get(b"m:" + customer))


async def look_up_many(client, keys: list[bytes]) -> list[list]:
    """The same for a batch: a pipeline of the contact GETs, then one of the member GETs."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        customers = await pipe.execute()
    if any(c is None for c in customers):
        raise LookupError("a contact of the batch is not in Redis")
    async with client.pipeline(transaction=False) as pipe:
        for customer in customers:
            pipe.get(b"m:" + customer)
        members = await pipe.execute()
    return [json.loads(m) for m in members]


def _measure(port: int, keys: list[bytes], seconds: float, repeats: int) -> dict[str, float]:
    batch = keys[:BATCH]

    async def single(client, i: int) -> None:
        await look_up(client, keys[i % len(keys)])

    async def ping(client, i: int) -> None:
        await client.ping()

    async def many(client, i: int) -> None:
        await look_up_many(client, batch)

    async def ping_many(client, i: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(BATCH):
                pipe.ping()
            await pipe.execute()

    scripts: dict[int, object] = {}  # one registered script per client (per run)

    async def lua(client, i: int) -> None:
        script = scripts.get(id(client))
        if script is None:
            script = scripts[id(client)] = client.register_script(_LOOK_UP_LUA)
        answer = await script(keys=[keys[i % len(keys)]], client=client)  # type: ignore[operator]
        json.loads(answer[1])

    def rate(work, items: int = 1) -> float:
        return _median(lambda: asyncio.run(_callers(port, work, items, seconds)), repeats)

    return {
        "single": rate(single),
        "lua": rate(lua),
        "ping": rate(ping),
        "pipeline": rate(many, BATCH),
        "ping_pipeline": rate(ping_many, BATCH),
    }


def _check(port: int, keys: list[bytes], expected: list[list[Contact]]) -> None:
    """The members Redis returns for the batch are the customers' contacts."""

    async def run() -> list[list]:
        import redis.asyncio as aioredis

        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            return await look_up_many(client, keys)
        finally:
            await client.aclose()

    for got, members in zip(asyncio.run(run()), expected, strict=True):
        if sorted(map(tuple, got)) != sorted(members):
            raise RuntimeError(f"Redis returned {got} for a customer of {members}")


def bench_redis(*, smoke: bool, repeats: int) -> list[Entry]:
    """Redis look-ups on the customers bench_grpc serves; empty when redis-server is missing."""
    if shutil.which("redis-server") is None:
        print(INSTALL_HINT, file=sys.stderr)
        return []
    seconds = 1.0 if smoke else 5.0
    count = SMOKE_SIZE if smoke else SERVED_FULL
    try:
        dataset = crm_records(count, SERVED_SEED, cap_free=True)
        customers = dataset.customers()
        by_contact = {c: members for members in customers.values() for c in members}
        resolved = [dataset.records[i].contacts[0] for i in range(min(count, RESOLVE_KEYS))]
        contacts = [contact_of(k) for k in resolved]
        keys = [contact_key(c) for c in contacts]
        expected = [by_contact[c] for c in contacts[:BATCH]]
        del by_contact, dataset
        with (
            tempfile.TemporaryDirectory(prefix="idlink-redis-") as folder,
            redis_server(Path(folder)) as port,
        ):
            load_customers(port, customers, SERVED_SEED)
            del customers
            _check(port, keys[:BATCH], expected)
            rates = _measure(port, keys, seconds, repeats)
    except Exception as exc:  # a failed figure, not a failed run
        print(f"redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        why = f"failed: {type(exc).__name__}: {str(exc)[:160]}"
        return [
            Entry(SINGLE_NAME, 0.0, "look-ups/s", why, 0.0, 0.0, None, False),
            Entry(PIPELINE_NAME, 0.0, "look-ups/s", why, 0.0, 0.0, None, False),
        ]
    ping = f"redis-py PING, {CONCURRENCY} callers"
    return [
        entry(SINGLE_NAME, rates["single"], "look-ups/s", ping, rates["ping"]),
        entry(LUA_NAME, rates["lua"], "look-ups/s", ping, rates["ping"]),
        entry(
            PIPELINE_NAME,
            rates["pipeline"],
            "look-ups/s",
            f"pipelines of 1,000 PINGs, {CONCURRENCY} callers (items/s)",
            rates["ping_pipeline"],
        ),
    ]


def against_idlink(entries: list[Entry]) -> list[Entry]:
    """idlink's Resolve and BatchResolve of this run beside Redis's look-ups of this run."""

    def find(name: str) -> Entry | None:
        return next((e for e in entries if e.name == name and e.value > 0), None)

    out = []
    unary, single = find(UNARY_NAME), find(SINGLE_NAME)
    batch, pipeline = find(BATCH_NAME), find(PIPELINE_NAME)
    if unary and single:
        out.append(
            entry(
                "Resolve unary vs Redis single look-ups",
                unary.value,
                unary.unit,
                SINGLE_NAME,
                single.value,
                target=0.35,
            )
        )
    if batch and pipeline:
        out.append(
            entry(
                "BatchResolve of 1,000 vs Redis pipelines of 1,000",
                batch.value,
                batch.unit,
                PIPELINE_NAME,
                pipeline.value,
                target=1.0,
            )
        )
    if (single or pipeline) and not out:
        print("redis: no idlink Resolve figures in this run (add the grpc group for the ratios)")
    return out
