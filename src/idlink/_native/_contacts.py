"""Contact clean-up and hashing: the compiled module when it is built, else the pure-Python twin.

``IDLINK_PURE_PYTHON=1`` forces the twin.
"""

import os

IMPLEMENTATION = "python"
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

        IMPLEMENTATION = "c"
    except ImportError:
        pass
if IMPLEMENTATION == "python":
    from idlink._native._contacts_py import NORMALIZER_EMAIL, NORMALIZER_PHONE, NORMALIZER_TRIM, clean, contact_pid, invalid_reason, prepare, prepare_many  # type: ignore[assignment]

__all__ = ["NORMALIZER_EMAIL", "NORMALIZER_PHONE", "NORMALIZER_TRIM", "clean", "contact_pid", "invalid_reason", "prepare", "prepare_many"]
