"""Per-account security settings (SPEC 8): redaction, anomaly thresholds, retention.

Kept by the store beside the account's configuration
(``AccountTxn.get_security_policy``); an account without settings gets the
defaults below.
"""

from __future__ import annotations

from idlink.store.txn import AccountTxn, SecurityPolicyState

DEFAULT_REGION = "US"
DEFAULT_ANOMALY_MAX_CUSTOMERS = 500
DEFAULT_ANOMALY_WINDOW_SECONDS = 60


def load_policy(txn: AccountTxn) -> SecurityPolicyState:
    """The account's settings with defaults filled in."""
    return with_defaults(txn.get_security_policy() or SecurityPolicyState())


def with_defaults(policy: SecurityPolicyState) -> SecurityPolicyState:
    out = SecurityPolicyState()
    out.CopyFrom(policy)
    out.default_region = out.default_region or DEFAULT_REGION
    out.anomaly_max_customers = out.anomaly_max_customers or DEFAULT_ANOMALY_MAX_CUSTOMERS
    out.anomaly_window_seconds = out.anomaly_window_seconds or DEFAULT_ANOMALY_WINDOW_SECONDS
    return out


def store_policy(txn: AccountTxn, policy: SecurityPolicyState) -> None:
    txn.put_security_policy(policy)
