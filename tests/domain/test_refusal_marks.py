"""Refusal marks: a resolve reads a linkable contact's records only when one can suggest.

A contact named by a refused record (CAPPED, CONFLICT) is marked refused
(``ContactState.refused``); in an account that keeps the marks
(``AccountState.refusals_marked``, every account made since), the resolve of a
linkable contact that is not marked and never moved reads none of its records.
An account made before the marks reads them all until a rebuild marks it.
The property tests of test_invariant.py compare every resolve with one that
reads every record.
"""

from __future__ import annotations

from idlink.domain.check import check_account
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import AccountPolicy
from idlink.store import serving as store_serving

ACCOUNT = "acme"
T0 = 1_700_000_000_000_000
A, B, C = (ContactKey("email", f"{n}@example.com") for n in "abc")
LONER = ContactKey("email", "loner@example.com")


def _capped(engine: IdentityEngine) -> None:
    """A and B one customer under a cap of 2; a record joining C to A is refused (CAPPED)."""
    engine.set_account_policy(ACCOUNT, AccountPolicy(max_contacts=2))
    engine.ingest(
        ACCOUNT,
        [
            RecordInput("crm", "ab", [A, B], T0),
            RecordInput("crm", "ac", [A, C], T0 + 1),
            RecordInput("crm", "alone", [LONER], T0 + 2),
        ],
    )


def _records_read(engine: IdentityEngine, key: ContactKey) -> int:
    with engine.store.read() as txn, store_serving.recorded(txn) as log:
        engine._resolver(ACCOUNT, key)(txn)
    return sum(name == "records" for name, _, _ in log.gets)


def _unmark(engine: IdentityEngine) -> None:
    """Make the account as one made before the marks: no marks, the account not keeping them."""

    def run(txn):
        account = txn.account(txn.account_id(ACCOUNT))
        for pid, contact in list(account.iter_contacts()):
            contact.refused = False
            account.put_contact(pid, contact)
        state = account.get_config()
        state.refusals_marked = False
        account.put_config(state)

    engine.store.write(run)


def test_a_new_account_keeps_the_marks(engine: IdentityEngine) -> None:
    _capped(engine)
    assert engine.account_config(ACCOUNT).marks_refusals
    with engine.read(ACCOUNT) as view:
        marked = {c.value for _, c in view.txn.iter_contacts() if c.refused}
    assert marked == {A.value, C.value}
    assert check_account(engine, ACCOUNT).problems == []


def test_an_account_made_by_its_first_ingest_keeps_the_marks(engine: IdentityEngine) -> None:
    """No policy change, no rebuild: the ingest that creates the account marks it."""
    engine.ingest(ACCOUNT, [RecordInput("crm", "alone", [LONER], T0)])
    assert engine.account_config(ACCOUNT).marks_refusals
    assert _records_read(engine, LONER) == 0


def test_only_a_marked_contact_reads_its_records(engine: IdentityEngine) -> None:
    _capped(engine)
    assert _records_read(engine, LONER) == 0
    assert _records_read(engine, A) > 0
    suggested = engine.resolve(ACCOUNT, C).suggestions
    assert [s.reason for s in suggested] == ["REFUSED_LINK"]
    assert suggested[0].customer_pid == engine.resolve(ACCOUNT, A).customer.pid


def test_an_account_made_before_the_marks_reads_every_record_until_a_rebuild(
    engine: IdentityEngine,
) -> None:
    _capped(engine)
    _unmark(engine)
    fresh = IdentityEngine(engine.store, b"k" * 32)
    assert not fresh.account_config(ACCOUNT).marks_refusals
    assert _records_read(fresh, LONER) > 0
    assert [s.reason for s in fresh.resolve(ACCOUNT, C).suggestions] == ["REFUSED_LINK"]
    # A rebuild (a policy change) replays every contact from all its records: marked.
    fresh.set_account_policy(ACCOUNT, AccountPolicy(max_contacts=3, isolate_min_connections=50))
    fresh.set_account_policy(ACCOUNT, AccountPolicy(max_contacts=2))
    assert fresh.account_config(ACCOUNT).marks_refusals
    assert _records_read(fresh, LONER) == 0
    assert [s.reason for s in fresh.resolve(ACCOUNT, C).suggestions] == ["REFUSED_LINK"]
    assert check_account(fresh, ACCOUNT).problems == []


def test_check_names_a_linkable_contact_a_refused_record_names_but_that_is_unmarked(
    engine: IdentityEngine,
) -> None:
    _capped(engine)

    def run(txn):
        account = txn.account(txn.account_id(ACCOUNT))
        for pid, contact in list(account.iter_contacts()):
            if contact.value == C.value:
                contact.refused = False
                account.put_contact(pid, contact)

    engine.store.write(run)
    problems = check_account(engine, ACCOUNT).problems
    assert len(problems) == 1 and "named by a refused record but not marked" in problems[0]
