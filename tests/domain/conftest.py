"""Engine fixtures: a store in a temporary folder and an engine over it, per implementation."""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from idlink.domain import contacts, linking
from idlink.domain.engine import IdentityEngine
from idlink.security.crypto import open_store
from idlink.store.env import Store

MASTER = b"k" * 32
# Master secrets for tests that an outcome does not depend on the secret (SPEC 3.8).
SECRETS = [hashlib.sha256(b"idlink test secret %d" % i).digest() for i in range(10)]


def _native(name: str, impl: str):
    return importlib.import_module(f"idlink._native.{name}_{'py' if impl == 'python' else 'c'}")


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the pure-Python twins and on the compiled modules."""
    if request.param == "c" and os.environ.get("IDLINK_PURE_PYTHON") == "1":
        pytest.skip("IDLINK_PURE_PYTHON=1: compiled modules are not built")
    monkeypatch.setattr(linking, "UnionFind", _native("_unionfind", request.param).UnionFind)
    monkeypatch.setattr(
        linking, "ConnectionCounter", _native("_degree", request.param).ConnectionCounter
    )
    monkeypatch.setattr(contacts, "_contacts", _native("_contacts", request.param))
    return str(request.param)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with open_store(tmp_path / "store", durable=False) as opened:
        yield opened


@pytest.fixture
def engine(impl: str, store: Store) -> IdentityEngine:
    return IdentityEngine(store, MASTER)


@pytest.fixture
def make_engine(impl: str, tmp_path) -> Iterator[Callable[[bytes], IdentityEngine]]:
    """A factory of engines, each over a store of its own, keyed by the master secret given.

    Contact PIDs are keyed hashes of the account secret, which comes from the
    master secret: the same records under two of these engines have different
    PIDs, and so a different PID order.
    """
    with ExitStack() as stack:
        made: list[IdentityEngine] = []

        def make(master: bytes) -> IdentityEngine:
            store = stack.enter_context(open_store(tmp_path / f"store-{len(made)}", durable=False))
            made.append(IdentityEngine(store, master))
            return made[-1]

        yield make
