"""Compiled hot paths and their pure-Python twins.

Each module ``_x`` selects ``_x_c`` (Cython) when it is built and
``IDLINK_PURE_PYTHON`` is not ``1``, else ``_x_py``, the readable twin that is
the specification.
"""

from __future__ import annotations


def implementations() -> dict[str, str]:
    """Which implementation each native module uses ("c" or "python")."""
    from idlink._native import _contacts, _degree, _unionfind

    return {
        "unionfind": _unionfind.IMPLEMENTATION,
        "contacts": _contacts.IMPLEMENTATION,
        "degree": _degree.IMPLEMENTATION,
    }


def compiled_in_use() -> bool:
    return set(implementations().values()) == {"c"}
