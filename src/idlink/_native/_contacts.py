"""Contact clean-up, validation and PIDs: compiled when built, else the pure-Python twin.

`IMPLEMENTATION` says which one is in use ("c" or "python"); `_select`
says how it is chosen and what makes a fallback loud.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idlink._native._select import select

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

IMPLEMENTATION, _IMPORT_ERROR, _names = select(__name__, __all__)

if TYPE_CHECKING:  # the twin is the type source
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
    globals().update(_names)
