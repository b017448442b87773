"""API keys (SPEC 8): random tokens, stored only as their SHA-256, one account and role each.

A token is ``idl_`` + 32 random bytes (URL-safe base64): far too many to guess,
so an unkeyed hash is enough to keep the stored form useless to a thief.
Keys are checked against the store on every call, so a revocation (from any
process) takes effect on the caller's next call.

Interactive keys belong to people (docs/console.md). Such a key is accepted
only together with a live session of a sign-in that gave a TOTP code: the
bearer token is then ``<key token>.<session id>``. Sessions are kept, as
SHA-256 hashes, in the key's own stored state, so checking one costs nothing
more than reading the key, and every server process sharing the store sees
sign-ins, sign-outs and revocations at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

from idlink.errors import FailedPrecondition, InvalidArgument, NotFound
from idlink.security import totp
from idlink.security.roles import ROLE_NAMES, role_value
from idlink.store.txn import ApiKeyState, Txn
from idlink.text import check_text

TOKEN_PREFIX = "idl_"
TOKEN_BYTES = 32
MAX_ACCOUNT_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
SESSION_SEPARATOR = "."  # never in a token: they are URL-safe base64
SESSION_PREFIX = "ses_"
SESSION_BYTES = 32
MAX_SESSIONS = 8


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def _now_us() -> int:
    return time.time_ns() // 1000


def add_key(
    txn: Txn, account: str, role: str, *, description: str = "", created_by: str = ""
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
    from idlink.security.crypto import open_store

    role_value(role)
    with open_store(data_dir, multi_process=True) as store:
        token, _ = store.write(lambda txn: add_key(txn, account, role, created_by="cli"))
    return token


def split_token(token: str) -> tuple[str, str]:
    """A bearer token as (key token, session id); the session is empty for a plain key."""
    key_token, _, session = token.partition(SESSION_SEPARATOR)
    return key_token, session


def lookup(txn: Txn, token: str, now_us: int | None = None) -> ApiKeyState | None:
    """The live (not revoked) key of a token, or None.

    An interactive key needs a live session of a TOTP sign-in after it
    (``<key>.<session>``); a session on a key that is not interactive is refused.
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    key_token, session = split_token(token)
    state = txn.get_api_key(token_hash(key_token))
    if state is None or state.revoked_at_us:
        return None
    # A person's key needs its session; a program's key takes none.
    needs_session = state.interactive or session
    if needs_session and not (state.interactive and live_session(state, session, now_us)):
        return None
    return state


def lookup_key(txn: Txn, key_token: str) -> tuple[bytes, ApiKeyState] | None:
    """The live key of a key token (no session check), with its stored hash: for sign-in."""
    if not key_token.startswith(TOKEN_PREFIX) or len(key_token) > 128:
        return None
    hashed = token_hash(key_token)
    state = txn.get_api_key(hashed)
    if state is None or state.revoked_at_us:
        return None
    return hashed, state


# -- interactive keys: TOTP and sessions (docs/console.md) ----------------------------------


def _secret_aad(state: ApiKeyState) -> bytes:
    return b"totp-secret:" + state.key_id.encode()


def seal_secret(txn: Txn, state: ApiKeyState, secret: str) -> None:
    cipher = getattr(txn, "cipher", None)
    data = secret.encode()
    state.totp_secret_sealed = cipher.seal(data, _secret_aad(state)) if cipher else data


def open_secret(txn: Txn, state: ApiKeyState) -> str:
    cipher = getattr(txn, "cipher", None)
    blob = state.totp_secret_sealed
    if cipher is not None and cipher.is_sealed(blob):
        return bytes(cipher.open(blob, _secret_aad(state))).decode()
    return blob.decode()


def set_interactive(
    txn: Txn, account: str, key_id: str, interactive: bool
) -> tuple[ApiKeyState, str]:
    """Make a key interactive with a new TOTP seed (returned), or plain again.

    Either way every session of the key ends: a new seed means a new enrolment.
    """
    hashed, state = find(txn, account, key_id)
    if state.revoked_at_us:
        raise FailedPrecondition("the API key is revoked", field="key_id")
    secret = ""
    del state.sessions[:]
    state.failed_sign_ins = 0
    state.sign_in_locked_until_us = 0
    state.totp_last_step = 0
    state.interactive = interactive
    if interactive:
        secret = totp.new_secret()
        seal_secret(txn, state, secret)
    else:
        state.totp_secret_sealed = b""
    txn.put_api_key(hashed, state)
    return state, secret


def live_session(state: ApiKeyState, session: str, now_us: int | None = None) -> bool:
    if not session:
        return False
    now = _now_us() if now_us is None else now_us
    hashed = token_hash(session)
    return any(
        hmac.compare_digest(s.id_hash, hashed) and s.expires_at_us > now for s in state.sessions
    )


def add_session(state: ApiKeyState, now_us: int, seconds: int) -> str:
    """Open a session on the key's state (the caller writes it); its id, shown once."""
    live = [s for s in state.sessions if s.expires_at_us > now_us]
    del state.sessions[:]
    state.sessions.extend(live[-(MAX_SESSIONS - 1) :])
    session = SESSION_PREFIX + secrets.token_urlsafe(SESSION_BYTES)
    state.sessions.add(
        id_hash=token_hash(session), created_at_us=now_us, expires_at_us=now_us + seconds * 10**6
    )
    return session


def end_session(state: ApiKeyState, session: str) -> bool:
    hashed = token_hash(session)
    kept = [s for s in state.sessions if not hmac.compare_digest(s.id_hash, hashed)]
    ended = len(kept) != len(state.sessions)
    del state.sessions[:]
    state.sessions.extend(kept)
    return ended


def find(txn: Txn, account: str, key_id: str) -> tuple[bytes, ApiKeyState]:
    """A key of an account by its id (NotFound otherwise: never another account's)."""
    for hashed, state in txn.iter_api_keys():
        # Constant-time compare, though key ids are not secret.
        if state.account == account and hmac.compare_digest(state.key_id.encode(), key_id.encode()):
            return hashed, state
    raise NotFound("API key not found", field="key_id")


def list_keys(txn: Txn, account: str) -> list[ApiKeyState]:
    """The keys of an account, by key id (revoked ones included, marked)."""
    return sorted(
        (state for _, state in txn.iter_api_keys() if state.account == account),
        key=lambda s: s.key_id,
    )


def revoke(txn: Txn, account: str, key_id: str) -> ApiKeyState:
    hashed, state = find(txn, account, key_id)
    if not state.revoked_at_us:
        state.revoked_at_us = _now_us()
        txn.put_api_key(hashed, state)
    return state


def set_flag(txn: Txn, account: str, key_id: str, reason: str) -> ApiKeyState:
    """Flag (reason non-empty) or clear (reason empty) a key for anomaly throttling."""
    hashed, state = find(txn, account, key_id)
    state.flagged_at_us = _now_us() if reason else 0
    state.flag_reason = reason
    txn.put_api_key(hashed, state)
    return state


def role_name(state: ApiKeyState) -> str:
    return ROLE_NAMES.get(state.role, "")
