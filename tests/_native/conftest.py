"""The compiled modules, for the parity tests that cross them against their twins."""

from __future__ import annotations

import importlib
import os
from types import SimpleNamespace

import pytest

PURE_PYTHON = os.environ.get("IDLINK_PURE_PYTHON") == "1"
NATIVE_MODULES = ("unionfind", "contacts", "degree")


@pytest.fixture(scope="session")
def compiled() -> SimpleNamespace:
    """The compiled modules `_x_c` by short name (`unionfind`, `contacts`, `degree`).

    A parity test compares them with the pure-Python twins `_x_py`, which it
    imports itself; there is no "python" run, which would compare the twin
    with itself. Skipped under IDLINK_PURE_PYTHON=1 and when a compiled module
    is not built; test_compiled_loaded.py fails in the second case, so the
    skip is never silent.
    """
    if PURE_PYTHON:
        pytest.skip("IDLINK_PURE_PYTHON=1: no compiled module to cross against its twin")
    modules = {}
    for name in NATIVE_MODULES:
        try:
            module = importlib.import_module(f"idlink._native._{name}_c")
        except ImportError as exc:
            pytest.skip(
                f"compiled module idlink._native._{name}_c is not built ({exc}); "
                "test_compiled_loaded fails for it: run make build"
            )
        assert not str(module.__file__).endswith(".py"), f"{module.__name__} is not compiled"
        modules[name] = module
    return SimpleNamespace(**modules)
