"""Writing a computed generation into an empty account, batch by batch (``idlink load``).

The rows are decided by :mod:`idlink.generations.materialize` (the same
fields the online engine stores, worked out for the whole account at once)
and spelled and sealed by :mod:`idlink.store.bulk`; these use cases run each
batch inside one unit of work of :meth:`IdentityEngine.write
<idlink.domain.engine.IdentityEngine.write>`, so every batch commits durably
on the store's writer thread, between the server's own writes.

Nothing here writes change events or history: the switch to the new
generation tells the change feed (generations/cli.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from idlink.domain.unit import AccountUnit
from idlink.errors import FailedPrecondition
from idlink.store import bulk
from idlink.store.bulk import AccountKeys


def keys_of(unit: AccountUnit) -> AccountKeys:
    """The key speller of the unit's account (used outside the transaction afterwards)."""
    return AccountKeys(unit.txn)


def check_target(unit: AccountUnit) -> AccountKeys:
    """Refuse a target account that already holds contacts, records or customers."""
    if not unit.config.account_id:
        raise FailedPrecondition(
            f"account {unit.config.name!r} does not exist: nothing to load into"
        )
    if not bulk.is_empty(unit.txn):
        raise FailedPrecondition(
            f"account {unit.config.name!r} already holds contacts, records or customers: "
            "a generation is written into an empty account"
        )
    return AccountKeys(unit.txn)


def write_rows(unit: AccountUnit, table: str, rows: Sequence[tuple[bytes, bytes]]) -> bool:
    """One sorted batch of one table; True when it was appended."""
    return bulk.append_rows(unit.txn, table, rows)


def finish(unit: AccountUnit, contacts: int, customers: int) -> None:
    """The counters of the arrival order and of customer creation, after the last batch."""
    bulk.set_sequences(unit.txn, contacts, customers)
