"""Compiled hot paths of idlink, each with a pure-Python twin.

`_unionfind` (components of the contact graph), `_contacts` (clean-up,
validation and PIDs of contact values), `_degree` (connection counts for
the cluster cap) and `_bulk` (rows encoded, sealed and hashed in batches)
each select their Cython module `_x_c` when it is built, else their twin
`_x_py`, which is the specification. `IDLINK_PURE_PYTHON=1` forces the
twins. `_bulk_c` is built only where OpenSSL's development files are, so
the three others are the core that `IMPLEMENTATION` speaks of. See
docs/native.md.
"""

from __future__ import annotations

from idlink._native import _bulk, _contacts, _degree, _unionfind

_MODULES = (_unionfind, _contacts, _degree)
_ALL = (*_MODULES, _bulk)

IMPLEMENTATION = "c" if all(m.IMPLEMENTATION == "c" for m in _MODULES) else "python"


def compiled_in_use() -> bool:
    """Return whether all three compiled modules are in use."""
    return all(m.IMPLEMENTATION == "c" for m in _MODULES)


def implementations() -> dict[str, str]:
    """Return the implementation ("c" or "python") each module uses, by module."""
    return {m.__name__.rsplit(".", 1)[-1].lstrip("_"): m.IMPLEMENTATION for m in _ALL}
