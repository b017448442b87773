"""Listening addresses: HOST:PORT parsing and the loopback rule (plaintext only there)."""

from __future__ import annotations

import ipaddress


def split_listen(listen: str, option: str = "--listen") -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) as host and port; ``option`` names the flag in the error."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{option} must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (plaintext is allowed there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
