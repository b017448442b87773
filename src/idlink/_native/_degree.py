"""Connection counting: the compiled module when it is built, else the pure-Python twin.

``IDLINK_PURE_PYTHON=1`` forces the twin.
"""

import os

IMPLEMENTATION = "python"
if os.environ.get("IDLINK_PURE_PYTHON") != "1":
    try:
        from idlink._native._degree_c import ConnectionCounter, count_connections

        IMPLEMENTATION = "c"
    except ImportError:
        pass
if IMPLEMENTATION == "python":
    from idlink._native._degree_py import ConnectionCounter, count_connections  # type: ignore[assignment]

__all__ = ["ConnectionCounter", "count_connections"]
