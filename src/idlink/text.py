"""Checks on the names callers give (accounts, sources, record ids, descriptions).

A leaf beside idlink.errors: the domain and security both check names, and
security sits below the domain, so the check cannot live in domain/ (security
may not import it) nor in security/ (it is not a security rule).
"""

from __future__ import annotations

import re

from idlink.errors import InvalidArgument

# The C0 controls, DEL and the C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_text(value: str, field: str, max_bytes: int, *, required: bool = True) -> None:
    """Refuse empty, oversized or control-character names (sources, record ids, accounts)."""
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", field=field)
        return
    try:
        encoded: bytes | None = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: measured as it would be stored
        encoded = None
    size = len(encoded) if encoded is not None else len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(f"{field} is longer than {max_bytes} bytes", field=field)
    if _CONTROL.search(value):
        raise InvalidArgument(f"{field} contains a control character", field=field)
    if encoded is None:
        raise InvalidArgument(f"{field} is not valid UTF-8 text", field=field)
