"""API keys (SPEC 8): random tokens, stored only as their SHA-256, one account and role each.

A token is ``idl_`` + 32 random bytes (URL-safe base64): far too many to guess,
so an unkeyed hash is enough to keep the stored form useless to a thief.
Keys are checked against the store on every call, so a revocation (from any
process) takes effect on the caller's next call.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from typing import Any

from idlink.domain.contacts import check_text
from idlink.domain.errors import InvalidArgument, NotFound
from idlink.security.roles import ROLE_NAMES, role_value
from idlink.store.txn import ApiKeyState

TOKEN_PREFIX = "idl_"
TOKEN_BYTES = 32
MAX_ACCOUNT_BYTES = 128
MAX_DESCRIPTION_BYTES = 256


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def _now_us() -> int:
    return time.time_ns() // 1000


def add_key(
    txn: Any, account: str, role: str, *, description: str = "", created_by: str = ""
) -> tuple[str, ApiKeyState]:
    """Store a new key in a write transaction; the token (shown once) and the stored key."""
    check_text(account, "account", MAX_ACCOUNT_BYTES)
    check_text(description, "description", MAX_DESCRIPTION_BYTES, required=False)
    try:
        value = role_value(role)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="role") from None
    token = new_token()
    state = ApiKeyState(
        key_id="key_" + secrets.token_hex(8),
        account=account,
        role=value,
        description=description,
        created_at_us=_now_us(),
        created_by=created_by,
    )
    txn.put_api_key(token_hash(token), state)
    return token, state


def create_key(data_dir: str | os.PathLike[str], account: str, role: str) -> str:
    """Create a key in the store of ``data_dir`` and return its token (``idlink keys create``).

    Works while a server runs on the folder: LMDB lets another process write.
    """
    from idlink.store.env import Store

    role_value(role)
    with Store(data_dir, multi_process=True) as store:
        token, _ = store.write(lambda txn: add_key(txn, account, role, created_by="cli"))
    return token


def lookup(txn: Any, token: str) -> ApiKeyState | None:
    """The live (not revoked) key of a token, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    state = txn.get_api_key(token_hash(token))
    if state is None or state.revoked_at_us:
        return None
    return state


def find(txn: Any, account: str, key_id: str) -> tuple[bytes, ApiKeyState]:
    """A key of an account by its id (NotFound otherwise: never another account's)."""
    for hashed, state in txn.iter_api_keys():
        # Constant-time compare, though key ids are not secret.
        if state.account == account and hmac.compare_digest(state.key_id.encode(), key_id.encode()):
            return hashed, state
    raise NotFound("API key not found", field="key_id")


def list_keys(txn: Any, account: str) -> list[ApiKeyState]:
    """The keys of an account, by key id (revoked ones included, marked)."""
    return sorted(
        (state for _, state in txn.iter_api_keys() if state.account == account),
        key=lambda s: s.key_id,
    )


def revoke(txn: Any, account: str, key_id: str) -> ApiKeyState:
    hashed, state = find(txn, account, key_id)
    if not state.revoked_at_us:
        state.revoked_at_us = _now_us()
        txn.put_api_key(hashed, state)
    return state


def set_flag(txn: Any, account: str, key_id: str, reason: str) -> ApiKeyState:
    """Flag (reason non-empty) or clear (reason empty) a key for anomaly throttling."""
    hashed, state = find(txn, account, key_id)
    state.flagged_at_us = _now_us() if reason else 0
    state.flag_reason = reason
    txn.put_api_key(hashed, state)
    return state


def role_name(state: ApiKeyState) -> str:
    return ROLE_NAMES.get(state.role, "")
