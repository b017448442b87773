"""Generations: stores built by the online engine, their exports, and one SparkSession.

A store is built in a data folder of its own with its own master key (what
``idlink export-records`` reads), by the engine itself, then closed, so the
export opens it as a second process would. The Spark engine's session is
made once for the whole test run (``local[2]``, loopback, UI off) and
stopped at its end.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from idlink.domain import contacts, linking
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import NORMALIZER_TRIM, AccountPolicy, KeyType
from idlink.generations import local
from idlink.generations.export import account_reader
from idlink.security.crypto import open_store
from idlink.security.secrets import load_master_secret

ACCOUNT = "acme"
CAP = 6
ISOLATE_AT = 3


def _native(name: str, impl: str):
    return importlib.import_module(f"idlink._native.{name}_{'py' if impl == 'python' else 'c'}")


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The pure-Python twins or the compiled modules, for the online engine and the local one."""
    if request.param == "c" and os.environ.get("IDLINK_PURE_PYTHON") == "1":
        pytest.skip("IDLINK_PURE_PYTHON=1: compiled modules are not built")
    unionfind = _native("_unionfind", request.param)
    monkeypatch.setattr(linking, "UnionFind", unionfind.UnionFind)
    monkeypatch.setattr(
        linking, "ConnectionCounter", _native("_degree", request.param).ConnectionCounter
    )
    monkeypatch.setattr(contacts, "_contacts", _native("_contacts", request.param))
    monkeypatch.setattr(local, "_unionfind", unionfind)
    return str(request.param)


@dataclass
class Built:
    """A store the online engine built, closed, and what the engine said about it."""

    data: Path
    partition: set[frozenset[bytes]]
    isolated: set[bytes]
    # customer PID -> (contact PIDs, split_from), as stored.
    customers: dict[bytes, tuple[frozenset[bytes], bytes]] = field(default_factory=dict)
    pid_of: dict[ContactKey, bytes] = field(default_factory=dict)


Operation = tuple[str, tuple]


def configure(engine: IdentityEngine, account: str = ACCOUNT) -> None:
    engine.set_account_policy(account, AccountPolicy(CAP, ISOLATE_AT))
    engine.put_key_type(account, KeyType("member", NORMALIZER_TRIM, max_per_customer=1))


def snapshot(engine: IdentityEngine, account: str) -> tuple[set, set, dict]:
    """The stored partition, isolated contacts and customers of an account."""
    partition = set(engine.partition(account))
    isolated = {c.pid for c in engine.list_isolated(account, limit=100_000)}
    customers = {}
    with account_reader(engine, account) as reader:
        assert reader is not None
        for pid, state in reader.txn.iter_customers():
            customers[pid] = (frozenset(state.contact_pids), state.split_from)
    return partition, isolated, customers


def build_store(
    folder: Path,
    apply: Callable[[IdentityEngine], None],
    *,
    account: str = ACCOUNT,
    master_hex: str | None = None,
) -> Built:
    """Run ``apply`` on an engine over a new store in ``folder``/data and close the store."""
    data = folder / "data"
    data.mkdir(mode=0o700, parents=True)
    if master_hex is not None:
        (data / "master.key").write_bytes(bytes.fromhex(master_hex))
        os.chmod(data / "master.key", 0o600)
    with open_store(data, durable=False) as store:
        engine = IdentityEngine(store, load_master_secret(data))
        apply(engine)
        partition, isolated, customers = snapshot(engine, account)
    return Built(data, partition, isolated, customers)


def record(source: str, rid: str, keys: Sequence[ContactKey], observed: int) -> RecordInput:
    return RecordInput(source, rid, list(keys), observed)


@pytest.fixture(scope="session")
def spark_session() -> Iterator[object]:
    """The one SparkSession of the test run (local[2] on loopback, UI off)."""
    pytest.importorskip("pyspark")
    from idlink.generations import spark_engine

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = spark_engine.session("local[2]")
    yield session
    spark_engine.stop()
