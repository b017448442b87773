"""The serving cache is exact: a cached resolve is always the answer of the caller's own snapshot.

Each check opens one read transaction and compares the answer the cache gives
in it with the answer computed from nothing in the same transaction, while
another thread merges, splits, deletes records, sets and clears do-not-link,
erases customers and updates profiles. Breaking the cache's validation (serving
an entry whatever its log says) makes these tests fail.
"""

from __future__ import annotations

import random
import threading

import pytest

from idlink.domain import erasure, profiles
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.keytypes import AccountPolicy
from idlink.domain.views import FOUND, NOT_FOUND
from idlink.errors import IdlinkError
from idlink.store import serving as store_serving
from idlink.store.txn import Txn

ACCOUNT = "acme"
T0 = 1_700_000_000_000_000


def _email(i: int) -> ContactKey:
    return ContactKey("email", f"p{i}@example.com")


def _phone(i: int) -> ContactKey:
    return ContactKey("phone", f"+44770090{i:04d}")


def _keys(people: int) -> list[ContactKey]:
    return [k for i in range(people) for k in (_email(i), _phone(i))] + [_email(10_000)]


def _seed(engine: IdentityEngine, people: int) -> None:
    engine.ingest(
        ACCOUNT,
        [RecordInput("crm", f"r{i}", [_email(i), _phone(i)], T0 + i) for i in range(people)],
    )


def _check_all(engine: IdentityEngine, keys: list[ContactKey]) -> int:
    """Compare cached and uncached answers of every key, each pair in one transaction."""
    compared = 0
    with engine.store.read() as txn:
        for key in keys:
            cache_key = ("resolve", ACCOUNT, key.type, key.value, key.source)
            cached = engine.serving.answer_in(
                txn,
                cache_key,
                lambda key=key: engine._resolver(ACCOUNT, key),  # type: ignore[misc]
            )
            fresh = engine._resolver(ACCOUNT, key)(txn)
            assert cached == fresh, f"stale answer for {key}"
            compared += 1
    return compared


def test_answers_follow_each_write(engine: IdentityEngine) -> None:
    _seed(engine, 4)
    keys = _keys(4)
    _check_all(engine, keys)
    before = engine.resolve(ACCOUNT, _email(0))
    assert before.status == FOUND and len(before.customer.contacts) == 2  # type: ignore[union-attr]

    # A merge: the cached customer of p0 must grow at once.
    engine.link(ACCOUNT, RecordInput("crm", "m01", [_email(0), _email(1)], T0 + 100))
    merged = engine.resolve(ACCOUNT, _email(0))
    assert len(merged.customer.contacts) == 4  # type: ignore[union-attr]
    _check_all(engine, keys)

    # A split (the merging record deleted), then do-not-link on a contact.
    engine.delete_record(ACCOUNT, "crm", "m01")
    assert len(engine.resolve(ACCOUNT, _email(0)).customer.contacts) == 2  # type: ignore[union-attr]
    engine.set_contact_policy(ACCOUNT, _phone(2), do_not_link=True)
    assert engine.resolve(ACCOUNT, _phone(2)).reason == "DO_NOT_LINK"
    assert len(engine.resolve(ACCOUNT, _email(2)).customer.contacts) == 1  # type: ignore[union-attr]
    engine.set_contact_policy(ACCOUNT, _phone(2), do_not_link=False)
    assert len(engine.resolve(ACCOUNT, _email(2)).customer.contacts) == 2  # type: ignore[union-attr]
    _check_all(engine, keys)

    # A profile change touches no contact: the answer still shows it.
    pid = engine.resolve(ACCOUNT, _email(3)).customer.pid  # type: ignore[union-attr]
    profiles.update_customer(engine, ACCOUNT, pid, profiles.ProfileUpdate(add_labels=["vip"]))
    assert "vip" in engine.resolve(ACCOUNT, _email(3)).customer.profile.labels  # type: ignore[union-attr]

    # Erasure: the contact is gone.
    erasure.erase_customer(engine, ACCOUNT, pid)
    assert engine.resolve(ACCOUNT, _email(3)).status == NOT_FOUND
    _check_all(engine, keys)
    assert engine.serving.replayed + engine.serving.hits > 0


def test_answers_exact_during_concurrent_writes(engine: IdentityEngine) -> None:
    people = 12
    _seed(engine, people)
    keys = _keys(people)
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = [0]

    def writer() -> None:
        rng = random.Random(7)
        n = 0
        try:
            while not stop.is_set() and n < 400:
                n += 1
                a, b = rng.randrange(people), rng.randrange(people)
                kind = rng.randrange(6)
                try:
                    if kind == 0:  # merge
                        engine.link(
                            ACCOUNT,
                            RecordInput("crm", f"m{a}-{b}", [_email(a), _email(b)], T0 + 1000 + n),
                        )
                    elif kind == 1:  # split: delete a merging record (maybe absent)
                        engine.delete_record(ACCOUNT, "crm", f"m{a}-{b}")
                    elif kind == 2:  # unlink a person's own record, then put it back
                        engine.delete_record(ACCOUNT, "crm", f"r{a}")
                        engine.link(
                            ACCOUNT, RecordInput("crm", f"r{a}", [_email(a), _phone(a)], T0 + a)
                        )
                    elif kind == 3:  # do-not-link on, or off
                        engine.set_contact_policy(ACCOUNT, _phone(a), do_not_link=bool(n % 2))
                    elif kind == 4:  # erase a customer, then bring the person back
                        found = engine.resolve(ACCOUNT, _email(a))
                        if found.customer is not None:
                            erasure.erase_customer(engine, ACCOUNT, found.customer.pid)
                        engine.link(
                            ACCOUNT, RecordInput("crm", f"r{a}", [_email(a), _phone(a)], T0 + a)
                        )
                    else:  # a late record between two people
                        engine.link(
                            ACCOUNT, RecordInput("crm", f"l{a}-{b}", [_phone(a), _phone(b)], T0 - n)
                        )
                except IdlinkError:
                    pass  # e.g. an erased customer asked for again: nothing changed
                writes[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    compared = 0
    try:
        for _ in range(2_000):
            compared += _check_all(engine, keys)
            if not thread.is_alive():
                break
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    compared += _check_all(engine, keys)
    assert writes[0] > 20 and compared > 0
    # The cache did serve (and so was under test): by snapshot or after a replay.
    assert engine.serving.hits + engine.serving.replayed > 0
    assert engine.serving.computed > len(keys)


def test_a_replay_that_sees_a_change_misses(engine: IdentityEngine) -> None:
    _seed(engine, 2)
    key = _email(0)
    engine.resolve(ACCOUNT, key)
    engine.link(ACCOUNT, RecordInput("crm", "m", [_email(0), _email(1)], T0 + 50))
    computed = engine.serving.computed
    assert len(engine.resolve(ACCOUNT, key).customer.contacts) == 4  # type: ignore[union-attr]
    assert engine.serving.computed == computed + 1
    # A write elsewhere (another account) changes nothing this answer read: replayed.
    engine.link("other", RecordInput("crm", "x", [_email(5)], T0))
    replayed = engine.serving.replayed
    engine.resolve(ACCOUNT, key)
    assert engine.serving.replayed == replayed + 1


def _seed_with_refusal(engine: IdentityEngine) -> None:
    """One person, and a record that would join a third contact over a cap of 2 (CAPPED).

    Its contacts are marked refused, so their resolves read their records.
    """
    engine.set_account_policy(ACCOUNT, AccountPolicy(max_contacts=2))
    _seed(engine, 1)
    engine.link(ACCOUNT, RecordInput("crm", "capped", [_email(0), _email(7)], T0 + 7))


def test_log_replay_detects_changed_bytes(engine: IdentityEngine) -> None:
    _seed_with_refusal(engine)
    with engine.store.read() as txn:
        with store_serving.recorded(txn) as log:
            engine._resolver(ACCOUNT, _email(0))(txn)
        assert log.gets and log.entries and log.replayable
        assert log.unchanged(txn)
    engine.link(ACCOUNT, RecordInput("crm", "r9", [_email(0), _email(9)], T0 + 9))
    with engine.store.read() as txn:
        assert not log.unchanged(txn)


@pytest.mark.parametrize("size", [0])
def test_no_cache_computes_every_time(engine: IdentityEngine, size: int) -> None:
    engine.serving.limit = size
    _seed(engine, 1)
    engine.resolve(ACCOUNT, _email(0))
    engine.resolve(ACCOUNT, _email(0))
    assert len(engine.serving) == 0 and engine.serving.hits == 0


def test_log_replay_detects_a_changed_scan(engine: IdentityEngine) -> None:
    _seed(engine, 1)
    with engine.store.read() as txn:
        with store_serving.recorded(txn) as log:
            names = list(txn.iter_account_names())
        assert names == [ACCOUNT] and log.entries and not log.gets
        assert log.unchanged(txn)
    engine.link("zz-other", RecordInput("crm", "x", [_email(1)], T0))  # one more name in the scan
    with engine.store.read() as txn:
        assert not log.unchanged(txn)


def test_an_unrecorded_operation_is_not_kept(engine: IdentityEngine) -> None:
    _seed(engine, 1)
    with engine.store.read() as txn:
        with store_serving.recorded(txn) as log:
            txn._raw.stat(txn._dbs["contacts"])  # not an operation the log knows
        assert not log.replayable and not log.unchanged(txn)


def test_a_record_read_earlier_in_the_transaction_is_still_logged(engine: IdentityEngine) -> None:
    # The email and the phone share record r0: resolving the email first leaves
    # r0 opened in the transaction's own cache, which must not hide it from the
    # log of the phone's resolve (its answer depends on that record too).
    _seed_with_refusal(engine)
    engine.link(ACCOUNT, RecordInput("crm", "capped-2", [_phone(0), _email(8)], T0 + 8))
    with engine.store.read() as txn:
        engine._resolver(ACCOUNT, _email(0))(txn)
        with store_serving.recorded(txn) as log:
            engine._resolver(ACCOUNT, _phone(0))(txn)
    assert any(name == "records" for name, _, _ in log.gets)


def test_every_cache_of_a_transaction_is_set_aside_while_a_read_is_recorded(
    engine: IdentityEngine,
) -> None:
    # A recorded read starts with empty caches (Txn.CACHES): a cache missing from
    # that list would answer a read without an LMDB operation, unlogged.
    _seed_with_refusal(engine)

    def run(txn):
        txn.buffer_writes()
        engine._resolver(ACCOUNT, _email(0))(txn)
        containers = {
            name
            for name, value in vars(txn).items()
            if isinstance(value, (dict, set, list)) and name != "_dbs"
        }
        assert containers == set(txn.CACHES)
        assert txn._records, "the resolve opened records into the transaction's cache"
        before = {name: getattr(txn, name) for name in txn.CACHES}
        with store_serving.recorded(txn):
            assert all(getattr(txn, name) == {} for name in txn.CACHES)
            engine._resolver(ACCOUNT, _email(7))(txn)
        assert all(getattr(txn, name) is before[name] for name in txn.CACHES)

    engine.store.write(run)


def _audit_write(engine: IdentityEngine) -> None:
    from idlink.security.audit import PendingEvent, write_events

    event = PendingEvent(
        account=ACCOUNT,
        at_us=T0,
        key_id="k",
        role="agent",
        method="Resolve",
        customer_pids=[],
        outcome="OK",
        detail="",
    )
    engine.store.write(lambda txn: write_events(txn, [event]), bookkeeping=True)


def test_an_audit_flush_keeps_cached_answers_without_a_replay(engine: IdentityEngine) -> None:
    _seed(engine, 2)
    key = _email(0)
    engine.resolve(ACCOUNT, key)
    with engine.store.read() as txn:
        version, snapshot = store_serving.data_version(txn), store_serving.snapshot_id(txn)
    _audit_write(engine)
    with engine.store.read() as txn:
        assert store_serving.snapshot_id(txn) != snapshot  # a commit happened...
        assert store_serving.data_version(txn) == version  # ...of bookkeeping only
    hits, replayed, computed = engine.serving.hits, engine.serving.replayed, engine.serving.computed
    engine.resolve(ACCOUNT, key)
    assert engine.serving.hits == hits + 1
    assert (engine.serving.replayed, engine.serving.computed) == (replayed, computed)
    # Any other write moves the version: the next answer is proved again by a replay.
    engine.link("other", RecordInput("crm", "x", [_email(5)], T0))
    engine.resolve(ACCOUNT, key)
    assert engine.serving.replayed == replayed + 1


def test_a_bookkeeping_write_may_write_nothing_an_answer_reads(engine: IdentityEngine) -> None:
    _seed(engine, 1)
    with engine.store.read() as txn:
        version = store_serving.data_version(txn)
    with pytest.raises(store_serving.BookkeepingOnly):
        engine.store.write(lambda txn: txn.put_meta(b"anything", b"1"), bookkeeping=True)
    with pytest.raises(store_serving.BookkeepingOnly):
        engine.store.write(
            lambda txn: txn.account(1)._txn._put("contacts", b"x", b"y"), bookkeeping=True
        )
    with pytest.raises(store_serving.BookkeepingOnly):  # nor through a cursor's putmulti
        engine.store.write(
            lambda txn: txn._raw.cursor(db=txn._dbs["meta"]).putmulti([(b"anything", b"1")]),
            bookkeeping=True,
        )
    with engine.store.read() as txn:
        assert txn.get_meta(b"anything") is None
        assert store_serving.data_version(txn) == version
    engine.store.write(lambda txn: txn.put_meta(b"anything", b"1"))
    with engine.store.read() as txn:
        assert store_serving.data_version(txn) == version + 1


def test_an_answer_that_read_audit_data_is_proved_by_a_replay(engine: IdentityEngine) -> None:
    _seed(engine, 1)
    _audit_write(engine)

    def audit_count(txn: object) -> int:
        return sum(1 for _ in txn.account(txn.account_id(ACCOUNT)).audit_after(0))  # type: ignore[attr-defined]

    assert engine.serving.answer(("audit",), lambda: audit_count) == 1
    _audit_write(engine)  # a bookkeeping write, but this answer read the audit log
    assert engine.serving.answer(("audit",), lambda: audit_count) == 2


def test_an_answer_that_got_a_bookkeeping_key_is_proved_by_a_replay(engine: IdentityEngine) -> None:
    """A get of a key a bookkeeping write may change (here the health probe's) counts too."""
    _seed(engine, 1)

    def probe(txn: Txn) -> bytes | None:
        return txn.get_meta(store_serving.PROBE_KEY)

    def write_probe(value: bytes) -> None:
        engine.store.write(
            lambda txn: txn.put_meta(store_serving.PROBE_KEY, value), bookkeeping=True
        )

    write_probe(b"1")
    assert engine.serving.answer(("probe",), lambda: probe) == b"1"
    write_probe(b"2")  # the data version stays: only a replay shows the change
    assert engine.serving.answer(("probe",), lambda: probe) == b"2"
