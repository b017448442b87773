"""The one choice between a compiled module and its twin (idlink._native._select)."""

from __future__ import annotations

import sys

import pytest

from idlink._native import _degree_py
from idlink._native._select import select

NAMES = ["ConnectionCounter", "count_connections"]


def test_a_compiled_module_that_does_not_load_falls_back_and_says_why(monkeypatch):
    monkeypatch.delenv("IDLINK_PURE_PYTHON", raising=False)
    monkeypatch.setitem(sys.modules, "idlink._native._degree_c", None)  # import fails
    chosen = select("idlink._native._degree", NAMES)
    assert chosen.implementation == "python"
    assert chosen.import_error is not None and "_degree_c" in chosen.import_error
    assert chosen.names["ConnectionCounter"] is _degree_py.ConnectionCounter


def test_a_name_neither_module_has_is_an_import_error(monkeypatch):
    monkeypatch.delenv("IDLINK_PURE_PYTHON", raising=False)
    with pytest.raises(ImportError, match="no_such_name"):
        select("idlink._native._degree", [*NAMES, "no_such_name"])


def test_pure_python_is_forced_by_the_variable_without_an_error(monkeypatch):
    monkeypatch.setenv("IDLINK_PURE_PYTHON", "1")
    chosen = select("idlink._native._degree", NAMES)
    assert (chosen.implementation, chosen.import_error) == ("python", None)
    assert chosen.names["count_connections"] is _degree_py.count_connections
