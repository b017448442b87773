"""Who may do what, as the service asks it (SPEC 8): admission, API keys, policy, audit.

The service's interceptor and its security RPCs call these use cases; each
reads or writes through the engine's front door (``read``, ``write``,
``read_keys``, ``write_keys``), so no code above the domain opens a store
transaction or handles a store message. What they give back are plain values
(:class:`ApiKey`, :class:`SecurityPolicy`, :class:`Admission`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from idlink.domain.engine import IdentityEngine
from idlink.domain.erasure import is_erased
from idlink.domain.profiles import load_schema
from idlink.domain.unit import AccountUnit
from idlink.security import apikeys
from idlink.security.audit import AuditFilter, list_events, thresholds
from idlink.security.policy import load_policy, store_policy, with_defaults
from idlink.store.txn import ApiKeyState, AuditEventState, SecurityPolicyState, Txn

__all__ = [
    "Admission",
    "ApiKey",
    "AuditEventState",
    "SecurityPolicy",
    "admission",
    "clear_key_flag",
    "create_api_key",
    "get_security_policy",
    "key_states",
    "list_api_keys",
    "list_audit_events",
    "revoke_api_key",
    "set_security_policy",
]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as an admin sees it: never its token (SPEC 8)."""

    key_id: str
    account: str
    role: int
    description: str
    created_by: str
    created_at_us: int
    revoked_at_us: int  # 0: live
    flagged_at_us: int  # 0: not flagged by anomaly detection
    flag_reason: str

    @classmethod
    def of(cls, state: ApiKeyState) -> ApiKey:
        return cls(**{name: getattr(state, name) for name in _field_names(cls)})


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """An account's security settings; zero means "the default" for the anomaly fields."""

    redact_free_text: bool = False
    default_region: str = ""
    anomaly_max_customers: int = 0
    anomaly_window_seconds: int = 0
    engagement_retention_seconds: int = 0
    inactive_customer_retention_seconds: int = 0

    @classmethod
    def of(cls, state: SecurityPolicyState) -> SecurityPolicy:
        return cls(**{name: getattr(state, name) for name in _field_names(cls)})

    def state(self) -> SecurityPolicyState:
        return SecurityPolicyState(**dataclasses.asdict(self))


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# -- admission ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """What admitting one call needs to know about its key, read in one transaction."""

    key: ApiKeyState
    # The customer the request names is erased (only asked for customer requests).
    erased: bool
    # The account's PII profile fields (only read for roles that do not see PII).
    pii_fields: frozenset[str]
    max_customers: int
    window_seconds: int


def admission(
    engine: IdentityEngine, token: str, *, customer_pid: bytes | None, pii_below: int
) -> Admission | None:
    """The live key of ``token`` and the account facts its call is judged by (None: no key).

    ``customer_pid`` is the customer the request names, if any; the PII field
    list is read only when the key's role is below ``pii_below``.
    """
    with engine.read_keys() as txn:
        state = apikeys.lookup(txn, token)
        if state is None:
            return None
        account_id = txn.account_id(state.account)
        # An account that does not exist yet holds nothing: nothing erased, no
        # schema, the default thresholds (id 0 names no account and reads as empty).
        scoped = txn.account(account_id or 0)
        erased = account_id is not None and customer_pid is not None
        erased = erased and is_erased(scoped, customer_pid or b"")
        pii: frozenset[str] = frozenset()
        if state.role < pii_below and account_id is not None:
            pii = frozenset(f.name for f in load_schema(scoped).ordered() if f.pii)
        max_customers, window = thresholds(scoped)
    return Admission(state, erased, pii, max_customers, window)


def key_states(engine: IdentityEngine, tokens: Iterable[str]) -> dict[str, ApiKeyState | None]:
    """The live key of each token (None: unknown or revoked), all read in one transaction."""
    with engine.read_keys() as txn:
        return {token: apikeys.lookup(txn, token) for token in tokens}


# -- API keys -------------------------------------------------------------------------------


def create_api_key(
    engine: IdentityEngine, account: str, role: str, *, description: str, created_by: str
) -> tuple[str, ApiKey]:
    """Create a key; its token (shown this once) and the key."""

    def run(txn: Txn) -> tuple[str, ApiKeyState]:
        return apikeys.add_key(txn, account, role, description=description, created_by=created_by)

    token, state = engine.write_keys(run)
    return token, ApiKey.of(state)


def list_api_keys(engine: IdentityEngine, account: str) -> list[ApiKey]:
    """The account's keys, revoked ones too, in key id order."""
    with engine.read_keys() as txn:
        return [ApiKey.of(state) for state in apikeys.list_keys(txn, account)]


def revoke_api_key(engine: IdentityEngine, account: str, key_id: str) -> ApiKey:
    """Revoke a key of the account (NOT_FOUND if it has no such key)."""
    return ApiKey.of(engine.write_keys(lambda txn: apikeys.revoke(txn, account, key_id)))


def clear_key_flag(engine: IdentityEngine, account: str, key_id: str) -> ApiKey:
    """Clear the anomaly flag of a key of the account."""
    return ApiKey.of(engine.write_keys(lambda txn: apikeys.set_flag(txn, account, key_id, "")))


# -- the security policy and the audit log ----------------------------------------------------


def set_security_policy(
    engine: IdentityEngine, account: str, policy: SecurityPolicy, actor: str = ""
) -> SecurityPolicy:
    """Store the account's settings (creating the account); what is in force, defaults filled."""

    def run(unit: AccountUnit) -> SecurityPolicyState:
        state = policy.state()
        store_policy(unit.txn, state)
        return with_defaults(state)

    return SecurityPolicy.of(engine.write(account, actor, run))


def get_security_policy(engine: IdentityEngine, account: str) -> SecurityPolicy:
    """The account's settings in force (the defaults for an account that does not exist)."""
    with engine.read(account) as view:
        return SecurityPolicy.of(load_policy(view.txn))


def list_audit_events(
    engine: IdentityEngine, account: str, flt: AuditFilter, after_seq: int, limit: int
) -> tuple[list[AuditEventState], int]:
    """Up to ``limit`` events of the account after ``after_seq``, and the last seq read."""
    with engine.read(account) as view:
        if not view.exists:
            return [], 0
        return list_events(view.txn, flt, after_seq, limit)
