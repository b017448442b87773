"""The one choice between a compiled module and its pure-Python twin.

Each selector `idlink._native._x` calls `select` with its public names:
`_x_c` when it is built and `IDLINK_PURE_PYTHON` is not "1", else the twin
`_x_py`, which is the specification. A failed import of the compiled module
(or a name it lacks) falls back to the twin but is kept as `import_error`,
so that tests/_native/test_compiled_loaded.py can make it loud.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import NamedTuple


class Selection(NamedTuple):
    """Which implementation a selector uses, why not the compiled one, and its names."""

    implementation: str  # "c" or "python"
    import_error: str | None
    names: dict[str, object]


def _load(module: str, names: Sequence[str]) -> dict[str, object]:
    loaded = importlib.import_module(module)
    try:
        return {name: getattr(loaded, name) for name in names}
    except AttributeError as exc:
        raise ImportError(f"cannot import name {exc.name!r} from {module!r}") from exc


def select(selector: str, names: Sequence[str]) -> Selection:
    """Return the implementation of `selector` (e.g. "idlink._native._degree") and its names."""
    error = None
    if os.environ.get("IDLINK_PURE_PYTHON") != "1":
        try:
            return Selection("c", None, _load(selector + "_c", names))
        except ImportError as exc:  # not built: the twin, and a test says so
            error = repr(exc)
    return Selection("python", error, _load(selector + "_py", names))
