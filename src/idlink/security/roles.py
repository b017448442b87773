"""Roles and the minimum role of every RPC (SPEC 8).

``reader`` < ``writer`` < ``agent`` < ``admin``: each role may do everything the
roles below it may. Roles below ``agent`` see PII masked.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

READER = 1
WRITER = 2
AGENT = 3
ADMIN = 4

ROLE_NAMES = {READER: "reader", WRITER: "writer", AGENT: "agent", ADMIN: "admin"}
ROLES = {name: value for value, name in ROLE_NAMES.items()}

# The roles that see contact values and PII fields in clear (SPEC 8).
PII_CLEAR_ROLE = AGENT

_IDENTITY = "/idlink.v1.IdentityService/"
_PROFILE = "/idlink.v1.ProfileService/"
_ADMIN = "/idlink.v1.AdminService/"

# Full method name -> minimum role. A method not in this table is refused:
# a new RPC must be given its role here before anyone can call it.
MINIMUM_ROLE: dict[str, int] = {
    _IDENTITY + "Resolve": READER,
    _IDENTITY + "StreamResolve": READER,
    _IDENTITY + "BatchResolve": READER,
    _IDENTITY + "ExplainLink": READER,
    _IDENTITY + "GetCustomerHistory": READER,
    _IDENTITY + "Link": WRITER,
    _IDENTITY + "Ingest": WRITER,
    _IDENTITY + "DeleteRecord": WRITER,
    _IDENTITY + "MergeKeys": AGENT,
    _IDENTITY + "SetContactPolicy": AGENT,
    _IDENTITY + "PreviewConfigChange": ADMIN,
    _PROFILE + "GetCustomer": READER,
    _PROFILE + "GetSchema": READER,
    _PROFILE + "ListJourney": READER,
    _PROFILE + "WatchChanges": READER,
    _PROFILE + "RecordEngagement": WRITER,
    _PROFILE + "UpdateCustomer": AGENT,
    _PROFILE + "RelinkEngagement": AGENT,
    _PROFILE + "UpdateSchema": ADMIN,
    _ADMIN + "PutKeyType": ADMIN,
    _ADMIN + "ListKeyTypes": ADMIN,
    _ADMIN + "SetAccountPolicy": ADMIN,
    _ADMIN + "GetAccountPolicy": ADMIN,
    _ADMIN + "ListIsolatedContacts": ADMIN,
    _ADMIN + "CreateApiKey": ADMIN,
    _ADMIN + "ListApiKeys": ADMIN,
    _ADMIN + "RevokeApiKey": ADMIN,
    _ADMIN + "ClearKeyFlag": ADMIN,
    _ADMIN + "ListAuditEvents": ADMIN,
    _ADMIN + "SetSecurityPolicy": ADMIN,
    _ADMIN + "GetSecurityPolicy": ADMIN,
    _ADMIN + "EraseCustomer": ADMIN,
    _ADMIN + "ExportCustomer": ADMIN,
    _ADMIN + "ApplyRetention": ADMIN,
}

# Reads that tell the caller which customer a contact or PID is, or what it
# holds: audited one by one (each answer of a stream, too), every customer
# they reveal counted by anomaly detection before it is sent, and refused
# while the caller's key is flagged (SPEC 8; docs/security.md, "Anomaly
# detection").
CUSTOMER_READS = frozenset(
    {
        _IDENTITY + "Resolve",
        _IDENTITY + "StreamResolve",
        _IDENTITY + "BatchResolve",
        _IDENTITY + "ExplainLink",
        _IDENTITY + "GetCustomerHistory",
        _PROFILE + "GetCustomer",
        _PROFILE + "ListJourney",
        _ADMIN + "ExportCustomer",
    }
)

# Feeds that name customers as the account's data changes: refused, and ended
# when open, while the caller's key is flagged, but not counted: what they
# name follows the account's writes, not the caller's choice.
CUSTOMER_FEEDS = frozenset({_PROFILE + "WatchChanges"})


def role_value(name: str) -> int:
    """The role of a name (``reader``, ``writer``, ``agent``, ``admin``); ValueError otherwise."""
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {name!r}") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key (by its id, never the token), its account and role."""

    key_id: str
    account: str
    role: int
    pii_fields: frozenset[str] = field(default_factory=frozenset)

    @property
    def sees_pii(self) -> bool:
        return self.role >= PII_CLEAR_ROLE

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, "")


# The caller of the call being served, set by the auth interceptor in the
# handler's task. A servicer reads it once, at its entry (caller()), and passes
# the principal on explicitly: no converter reads it, because work run on the
# thread pool does not see the context of the task that asked for it.
CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "idlink_caller", default=None
)

# Whom a call is answered as when no caller was admitted: no role, so every
# value that can be masked is masked (fail closed).
NOBODY = Principal(key_id="", account="", role=0)


def caller() -> Principal:
    """The admitted caller of the call being served, or NOBODY (sees everything masked)."""
    found = CALLER.get()
    return found if found is not None else NOBODY
