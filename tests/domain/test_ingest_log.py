"""A batch's new contacts each leave a record-log entry (what a load's catch-up reads)."""

from __future__ import annotations

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.store.txn import LOG_CONTACT

A = "acme"


def test_every_contact_a_batch_creates_is_in_the_record_log(engine: IdentityEngine) -> None:
    batch = [
        RecordInput(
            "crm", "1", [ContactKey("email", "a@x.com"), ContactKey("phone", "+14155550001")], 10
        ),
        RecordInput(
            "crm", "2", [ContactKey("email", "b@x.com"), ContactKey("email", "a@x.com")], 5
        ),
        RecordInput("crm", "3", [ContactKey("email", "c@x.com")], 20),
    ]
    engine.ingest(A, batch)
    engine.ingest(A, [RecordInput("crm", "4", [ContactKey("email", "d@x.com")], 1)])  # late
    with engine.read(A) as view:
        logged = [e.body for e in view.txn.log_after(0, 1_000) if e.kind == LOG_CONTACT]
        stored = [pid for pid, _ in view.txn.iter_contacts()]
    assert len(stored) == 5
    assert sorted(logged) == sorted(stored)
