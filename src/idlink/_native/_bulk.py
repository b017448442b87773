"""Rows of a bulk load encoded and sealed in batches: compiled when built, else the twin.

`IMPLEMENTATION` says which one is in use ("c" or "python"); `_select`
says how it is chosen and what makes a fallback loud.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idlink._native._select import select

__all__ = [
    "contact_states",
    "customer_states",
    "hmac_sha256_many",
    "keyed_blake2b_many",
    "record_states",
    "seal_rows",
]

IMPLEMENTATION, _IMPORT_ERROR, _names = select(__name__, __all__)

if TYPE_CHECKING:  # the twin is the type source
    from idlink._native._bulk_py import (
        contact_states,
        customer_states,
        hmac_sha256_many,
        keyed_blake2b_many,
        record_states,
        seal_rows,
    )
else:
    globals().update(_names)
