"""The fallback to pure Python is never silent (STYLE habit 2)."""

from __future__ import annotations

import os

import pytest

import idlink._native
from idlink._native import _bulk, _contacts, _degree, _unionfind

CORE = (_unionfind, _contacts, _degree)  # built everywhere; _bulk needs OpenSSL's headers
SELECTORS = (*CORE, _bulk)


def test_compiled_modules_are_in_use() -> None:
    if os.environ.get("IDLINK_PURE_PYTHON") == "1":
        assert all(m.IMPLEMENTATION == "python" for m in SELECTORS)
        assert idlink._native.IMPLEMENTATION == "python"
        assert not idlink._native.compiled_in_use()
        return
    fell_back = {m.__name__: m._IMPORT_ERROR for m in CORE if m.IMPLEMENTATION != "c"}
    assert not fell_back, f"compiled modules not in use (build them: make build): {fell_back}"
    assert idlink._native.IMPLEMENTATION == "c"
    assert idlink._native.compiled_in_use()


def test_selectors_re_export_the_chosen_implementation() -> None:
    for selector in SELECTORS:
        suffix = "c" if selector.IMPLEMENTATION == "c" else "py"
        chosen = __import__(f"{selector.__name__}_{suffix}", fromlist=["_"])
        for name in selector.__all__:
            assert getattr(selector, name) is getattr(chosen, name), (selector.__name__, name)


def _openssl_available() -> bool:
    from setup import openssl_available  # the build's own check (setup.py)

    return openssl_available()


def test_the_bulk_sealer_is_compiled_where_openssl_is() -> None:
    if os.environ.get("IDLINK_PURE_PYTHON") == "1":
        pytest.skip("the pure-Python build")
    if not _openssl_available():
        assert _bulk.IMPLEMENTATION == "python"
        pytest.skip("no OpenSSL development files here: setup.py builds _bulk_c without them")
    assert _bulk.IMPLEMENTATION == "c", _bulk._IMPORT_ERROR
