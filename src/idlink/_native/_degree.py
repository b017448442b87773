"""Connection counting for the cluster cap: compiled when built, else the pure-Python twin.

`IDLINK_PURE_PYTHON=1` forces the twin; so does a failed import of the
compiled module (tests/_native/test_compiled_loaded.py makes that failure
loud wherever the variable is not set). `IMPLEMENTATION` says which one is
in use: "c" or "python". The choice is made by `_select.select`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idlink._native._select import select

__all__ = [
    "ConnectionCounter",
    "count_connections",
]

IMPLEMENTATION, _IMPORT_ERROR, _names = select(__name__, __all__)

if TYPE_CHECKING:  # the twin is the type source
    from idlink._native._degree_py import (
        ConnectionCounter,
        count_connections,
    )
else:
    globals().update(_names)
