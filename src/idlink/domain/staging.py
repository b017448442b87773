"""Staging accounts of a generation load (``idlink load``): made, refused, dropped.

A load writes its generation into a hidden *staging* account beside the live
one, named ``A`` + ``"\\0staging"`` (users cannot send the name: account names
are checked text), with a fresh account id (ids are a counter, so it sorts
after every existing one) and the live account's configuration, schema and
security policy (:func:`begin`). A staging account a crashed load left is
dropped when the next load begins. A generation of an older account id (a
later load switched since its export), made before a configuration change,
or before an erasure is refused. Old account ids (the live one after a
switch, a stale staging one) are dropped in batches of write transactions
(:func:`drop_pending`); a meta marker lists them, so a later load or
``idlink compact`` finishes an interrupted drop. docs/operations.md,
"Loading a generation", has the whole path; :mod:`catchup` and
:mod:`switch` the rest of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from idlink.domain.accounts import Accounts, is_staging_name, staging_name
from idlink.domain.engine import IdentityEngine
from idlink.errors import FailedPrecondition
from idlink.store.txn import AccountTxn, Txn

ACTOR = "load"
DROP_BATCH = 20_000  # entries deleted per transaction when an old account id is dropped
FEED_PAGE = 10_000  # change events read at a time


class GenerationTooOld(FailedPrecondition):
    """A generation of an account id a later load replaced, or before a configuration change."""

    reason = "GENERATION_TOO_OLD"


@dataclass(slots=True)
class Baseline:
    """Where the live account stood when the generation's export read it."""

    change_seq: int
    record_log_seq: int
    account_id: int | None = None
    config_version: int | None = None
    export_id: str = ""


@dataclass(slots=True)
class Staging:
    """A load in progress: the live account, its staging account, how far the copy went."""

    account: str
    name: str
    live_id: int
    staging_id: int
    baseline: Baseline
    # The live account's change feed and audit log copied up to these.
    copied_change_seq: int = 0
    copied_audit_seq: int = 0
    # The live account's record log applied up to this.
    applied_log_seq: int = 0


# -- the staging account ---------------------------------------------------------------------


def begin(engine: IdentityEngine, account: str, baseline: Baseline) -> Staging:
    """Create the staging account of ``account`` (a stale one is dropped first)."""
    if is_staging_name(account):
        raise FailedPrecondition(f"{account!r} is a staging account")
    now = engine.clock()

    def run(txn: Txn) -> Staging:
        name = staging_name(account)
        stale = txn.account_id(name)
        if stale is not None:
            txn.forget_account_name(name)
            txn.mark_dropping(stale)
        live_id = txn.account_id(account)
        if live_id is None:
            live_id = Accounts().find_or_create(txn, account, now).account_id
        live = txn.account(live_id)
        refuse_if_older(live, account, baseline)
        state = live.get_config()
        assert state is not None
        staging_id = txn.create_account_id(name)
        staged = txn.account(staging_id)
        state.account_id = staging_id
        state.name = name
        staged.put_config(state)
        copy_settings(live, staged)
        return Staging(account, name, live_id, staging_id, baseline)

    return engine.write_keys(run)


def refuse_if_older(live: AccountTxn, account: str, baseline: Baseline) -> None:
    """Refuse a generation older than the live account, or made before a configuration change."""
    if baseline.account_id is not None and baseline.account_id != live.account_id:
        raise GenerationTooOld(
            f"the generation's export is of an earlier generation of account {account!r} "
            f"(account id {baseline.account_id}, now {live.account_id}: a later load "
            "switched since): export again"
        )
    marker = live.get_generation()
    if marker is not None and baseline.account_id is None:
        switched_at = int(json.loads(marker).get("switched_at_change_seq", 0))
        if baseline.change_seq < switched_at:
            raise GenerationTooOld(
                f"the generation's export (change {baseline.change_seq}) is older than the "
                f"load of account {account!r} at change {switched_at}: export again"
            )
    if baseline.config_version is not None and baseline.config_version != live.config_version():
        raise FailedPrecondition(
            f"the configuration of account {account!r} (key types or policy) changed since "
            "the export: export again and recluster",
            reason="CONFIGURATION_CHANGED",
        )
    if baseline.record_log_seq > live.record_log_seq():
        raise GenerationTooOld(
            f"the generation's export is ahead of account {account!r}'s record log "
            f"({baseline.record_log_seq} > {live.record_log_seq()}): not an export of this store"
        )


def refuse_if_erased(live: AccountTxn, account: str, since: int) -> None:
    """Refuse the switch when a customer was erased after the export.

    The generation (and the staging account) still hold the erased contacts;
    the erasure must not come back with the switch. The staging account is
    dropped and the load can be run again from a new export.
    """
    seq = since
    while True:
        events = live.changes_after(seq, FEED_PAGE)
        if not events:
            return
        for event in events:
            if event.kind == "erased":
                raise FailedPrecondition(
                    f"a customer of account {account!r} was erased after the export "
                    f"(change {event.seq}): export again",
                    reason="ERASED_SINCE_EXPORT",
                )
            seq = event.seq


def copy_settings(live: AccountTxn, staged: AccountTxn) -> None:
    schema = live.get_schema()
    if schema is not None and schema != staged.get_schema():
        staged.put_schema(schema)
    policy = live.get_security_policy()
    if policy is not None and policy != staged.get_security_policy():
        staged.put_security_policy(policy)


def accounts_of(txn: Txn, staging: Staging) -> tuple[AccountTxn, AccountTxn]:
    if txn.account_id(staging.name) != staging.staging_id:
        raise FailedPrecondition(
            f"the staging account of {staging.account!r} was replaced (another load started)"
        )
    if txn.account_id(staging.account) != staging.live_id:
        raise FailedPrecondition(f"account {staging.account!r} was switched by another load")
    return txn.account(staging.live_id), txn.account(staging.staging_id)


# -- dropping old account ids -------------------------------------------------------------------


def drop_pending(engine: IdentityEngine, batch: int = DROP_BATCH) -> int:
    """Drop every account id marked as being dropped, ``batch`` entries per transaction.

    Returns the entries deleted. Resumable: the marker of an id goes only
    once nothing of it is left. Nothing is written when nothing is marked.
    """
    total = 0
    if not pending_drops(engine):
        return 0
    while True:

        def run(txn: Txn) -> tuple[int, bool]:
            pending = txn.dropping()
            if not pending:
                return 0, False
            account_id = pending[0]
            deleted = txn.account(account_id).drop_some(batch)
            if deleted < batch:
                txn.unmark_dropping(account_id)
            return deleted, True

        deleted, more = engine.write_keys(run)
        total += deleted
        if not more:
            return total


def abandon(engine: IdentityEngine, staging: Staging) -> None:
    """Give up a load before its switch: the staging account is hidden and dropped."""

    def run(txn: Txn) -> None:
        if txn.account_id(staging.name) == staging.staging_id:
            txn.forget_account_name(staging.name)
            txn.mark_dropping(staging.staging_id)

    engine.write_keys(run)
    drop_pending(engine)


def pending_drops(engine: IdentityEngine) -> list[int]:
    with engine.read_keys() as txn:
        return txn.dropping()


def staging_accounts(engine: IdentityEngine) -> list[tuple[str, int]]:
    """Staging accounts left in the store (a load running, or one that crashed)."""
    with engine.read_keys() as txn:
        return list(txn.iter_hidden_account_names())
