"""Retention (SPEC 8): per-account limits on engagement age and customer inactivity.

A sweep deletes engagements that occurred longer ago than the account's
engagement limit, and erases customers (:mod:`erasure`) whose last change is
older than the inactive-customer limit. It works in batches of write
transactions so that a large account never holds the writer for long. The
server runs it on an interval; admins run it on demand.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from idlink.domain.engine import IdentityEngine
from idlink.domain.erasure import erase_in
from idlink.domain.unit import AccountUnit
from idlink.store.txn import SecurityPolicyState

BATCH = 500


@dataclass(slots=True)
class RetentionResult:
    engagements_deleted: int = 0
    customers_erased: int = 0


def apply_retention(
    engine: IdentityEngine, account: str | None = None, *, now_us: int | None = None
) -> RetentionResult:
    """Apply the retention limits of one account (or of every account)."""
    now = now_us if now_us is not None else engine.clock()
    if account is None:
        with engine.read_keys() as txn:
            accounts = list(txn.iter_account_names())
    else:
        accounts = [account]
    total = RetentionResult()
    for name in accounts:
        while True:
            step = engine.write(
                name, "retention", functools.partial(_sweep_batch, now=now), create=False
            )
            total.engagements_deleted += step.engagements_deleted
            total.customers_erased += step.customers_erased
            if step.engagements_deleted + step.customers_erased == 0:
                break
    return total


def _sweep_batch(unit: AccountUnit, *, now: int) -> RetentionResult:
    result = RetentionResult()
    txn = unit.txn
    if not unit.config.account_id:
        return result
    # Retention limits have no defaults: 0 keeps everything.
    policy = txn.get_security_policy() or SecurityPolicyState()
    if policy.engagement_retention_seconds > 0:
        limit = now - policy.engagement_retention_seconds * 1_000_000
        old = [e for e in txn.iter_engagements() if e.occurred_at_us < limit][:BATCH]
        for engagement in old:
            if engagement.pinned_customer_pid:
                txn.delete_pin(engagement.pinned_customer_pid, engagement.engagement_id)
            txn.delete_engagement(engagement)
        result.engagements_deleted = len(old)
    if policy.inactive_customer_retention_seconds > 0 and result.engagements_deleted < BATCH:
        limit = now - policy.inactive_customer_retention_seconds * 1_000_000
        stale = [
            (pid, customer)
            for pid, customer in txn.iter_customers()
            if max(customer.created_at_us, customer.updated_at_us) < limit
        ][: BATCH - result.engagements_deleted]
        for pid, _ in stale:
            # Read again: erasing one customer may have changed another one in this batch.
            customer = txn.get_customer(pid)
            if customer is not None:
                erase_in(unit, pid, customer)
                result.customers_erased += 1
    return result
