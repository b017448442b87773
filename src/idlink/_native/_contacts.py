"""Contact clean-up, validation and PIDs: compiled when built, else the pure-Python twin.

`IDLINK_PURE_PYTHON=1` forces the twin; so does a failed import of the
compiled module (tests/_native/test_compiled_loaded.py makes that failure
loud wherever the variable is not set). `IMPLEMENTATION` says which one is
in use: "c" or "python".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = [
    "NORMALIZER_EMAIL",
    "NORMALIZER_PHONE",
    "NORMALIZER_TRIM",
    "clean",
    "contact_pid",
    "invalid_reason",
    "prepare",
    "prepare_many",
]

IMPLEMENTATION = "python"
_IMPORT_ERROR: str | None = None

if TYPE_CHECKING:
    from idlink._native._contacts_py import (
        NORMALIZER_EMAIL,
        NORMALIZER_PHONE,
        NORMALIZER_TRIM,
        clean,
        contact_pid,
        invalid_reason,
        prepare,
        prepare_many,
    )
else:
    if os.environ.get("IDLINK_PURE_PYTHON") != "1":
        try:
            from idlink._native._contacts_c import (
                NORMALIZER_EMAIL,
                NORMALIZER_PHONE,
                NORMALIZER_TRIM,
                clean,
                contact_pid,
                invalid_reason,
                prepare,
                prepare_many,
            )
        except ImportError as exc:  # not built: the twin, and a test says so
            _IMPORT_ERROR = repr(exc)
        else:
            IMPLEMENTATION = "c"
    if IMPLEMENTATION == "python":
        from idlink._native._contacts_py import (
            NORMALIZER_EMAIL,
            NORMALIZER_PHONE,
            NORMALIZER_TRIM,
            clean,
            contact_pid,
            invalid_reason,
            prepare,
            prepare_many,
        )
