"""The compiled modules have exactly the public names and signatures of their twins.

Each test crosses a compiled module `_x_c` against its twin `_x_py`
(the `compiled` fixture of tests/_native/conftest.py).
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from idlink._native import _contacts, _degree, _unionfind

SELECTORS = {"unionfind": _unionfind, "contacts": _contacts, "degree": _degree}


def public_api(module: ModuleType) -> dict[str, Any]:
    """Return the names a module defines for its users (not what it imports)."""
    names = {}
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue
        constant = isinstance(value, int | str | bytes)
        if constant or getattr(value, "__module__", None) == module.__name__:
            names[name] = value
    return names


def shape(obj: Any) -> list[tuple[str, Any, Any]]:
    """Return the call shape of obj: each parameter's name, kind and default."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def pair(compiled: SimpleNamespace, name: str) -> tuple[ModuleType, ModuleType]:
    """Return (the twin, the compiled module): two modules, never one compared with itself."""
    twin, native = importlib.import_module(f"idlink._native._{name}_py"), getattr(compiled, name)
    assert native is not twin and native.__name__ == f"idlink._native._{name}_c"
    return twin, native


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_public_names_are_the_same(compiled: SimpleNamespace, name: str) -> None:
    twin, native = pair(compiled, name)
    assert sorted(public_api(native)) == sorted(public_api(twin))
    assert sorted(public_api(twin)) == sorted(SELECTORS[name].__all__)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_constants_are_equal(compiled: SimpleNamespace, name: str) -> None:
    twin, native = pair(compiled, name)
    for key, value in public_api(twin).items():
        if isinstance(value, int | str | bytes):
            assert getattr(native, key) == value, key


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_call_signatures_are_the_same(compiled: SimpleNamespace, name: str) -> None:
    twin, native = pair(compiled, name)
    for key, value in public_api(twin).items():
        if isinstance(value, int | str | bytes):
            continue
        other = getattr(native, key)
        assert shape(other) == shape(value), key
        if inspect.isclass(value):
            methods = {m for m in vars(value) if not m.startswith("_")}
            assert methods == {m for m in vars(other) if not m.startswith("_")}, key
            for method in methods:
                assert shape(getattr(other, method)) == shape(getattr(value, method)), (key, method)
            assert ("__len__" in vars(value)) == ("__len__" in vars(other)), key
