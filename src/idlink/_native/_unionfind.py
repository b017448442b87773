"""Union-find: the compiled module when it is built, else the pure-Python twin.

``IDLINK_PURE_PYTHON=1`` forces the twin.
"""

import os

IMPLEMENTATION = "python"
if os.environ.get("IDLINK_PURE_PYTHON") != "1":
    try:
        from idlink._native._unionfind_c import UnionFind, connected_components

        IMPLEMENTATION = "c"
    except ImportError:
        pass
if IMPLEMENTATION == "python":
    from idlink._native._unionfind_py import UnionFind, connected_components  # type: ignore[assignment]

__all__ = ["UnionFind", "connected_components"]
