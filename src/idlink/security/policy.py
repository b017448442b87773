"""Per-account security settings (SPEC 8): redaction, anomaly thresholds, retention.

Kept in the store's meta sub-database under ``security:`` + the account prefix;
an account without settings gets the defaults below.
"""

from __future__ import annotations

from typing import Any

from idlink.store.txn import SecurityPolicyState

DEFAULT_REGION = "US"
DEFAULT_ANOMALY_MAX_CUSTOMERS = 500
DEFAULT_ANOMALY_WINDOW_SECONDS = 60


def _key(prefix: bytes) -> bytes:
    return b"security:" + prefix


def load_policy(txn: Any, prefix: bytes) -> SecurityPolicyState:
    """The account's settings with defaults filled in."""
    raw = txn.get_meta(_key(prefix))
    policy = SecurityPolicyState()
    if raw is not None:
        policy.ParseFromString(raw)
    return with_defaults(policy)


def with_defaults(policy: SecurityPolicyState) -> SecurityPolicyState:
    out = SecurityPolicyState()
    out.CopyFrom(policy)
    out.default_region = out.default_region or DEFAULT_REGION
    out.anomaly_max_customers = out.anomaly_max_customers or DEFAULT_ANOMALY_MAX_CUSTOMERS
    out.anomaly_window_seconds = out.anomaly_window_seconds or DEFAULT_ANOMALY_WINDOW_SECONDS
    return out


def store_policy(txn: Any, prefix: bytes, policy: SecurityPolicyState) -> None:
    txn.put_meta(_key(prefix), policy.SerializeToString())
