"""Checks on the names callers give (accounts, sources, record ids, descriptions).

A leaf beside idlink.errors: the domain and security both check names, and
security sits below the domain, so the check cannot live in domain/ (security
may not import it) nor in security/ (it is not a security rule).
"""

from __future__ import annotations

from idlink.errors import InvalidArgument


def check_text(value: str, field: str, max_bytes: int, *, required: bool = True) -> None:
    """Refuse empty, oversized or control-character names (sources, record ids, accounts)."""
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", field=field)
        return
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(f"{field} is longer than {max_bytes} bytes", field=field)
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise InvalidArgument(f"{field} contains a control character", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field} is not valid UTF-8 text", field=field) from None
