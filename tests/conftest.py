"""Shared fixtures."""

from __future__ import annotations

import importlib
import os
from types import SimpleNamespace

import pytest

# --- native modules: every test of the compiled hot paths runs on both twins --------

PURE_PYTHON = os.environ.get("IDLINK_PURE_PYTHON") == "1"
NATIVE_MODULES = ("unionfind", "contacts", "degree")


@pytest.fixture(scope="session", params=["python", "c"])
def native_impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    """The native modules of one implementation: `unionfind`, `contacts`, `degree`.

    "python" binds the pure-Python twins (`_x_py`), "c" the compiled modules
    (`_x_c`). The "c" run is skipped only under IDLINK_PURE_PYTHON=1; anywhere
    else a compiled module that does not import is an error, not a skip.
    """
    if request.param == "c" and PURE_PYTHON:
        pytest.skip("IDLINK_PURE_PYTHON=1: the compiled modules are not in use")
    suffix = "py" if request.param == "python" else "c"
    modules = {
        name: importlib.import_module(f"idlink._native._{name}_{suffix}") for name in NATIVE_MODULES
    }
    return SimpleNamespace(name=request.param, **modules)
