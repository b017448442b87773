"""New customer PIDs are random RFC 9562 version 4 UUIDs (SPEC 3.5): nothing about a contact."""

from __future__ import annotations

import uuid

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import IdentityEngine, RecordInput
from idlink.domain.pids import new_customer_pid

T0 = 1_700_000_000_000_000


def test_new_customer_pids_are_random_version_4_uuids():
    pids = [new_customer_pid() for _ in range(2_000)]
    assert len(set(pids)) == len(pids)
    for pid in pids:
        assert len(pid) == 16
        parsed = uuid.UUID(bytes=pid)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    _check_free_bits(pids)


FIXED_BITS = (48, 49, 50, 51, 64, 65)  # the version nibble and the variant bits


def _check_free_bits(pids: list[bytes]) -> None:
    """Every bit outside the version and variant bits takes both values, each its own way."""
    numbers = [int.from_bytes(pid, "big") for pid in pids]
    columns = {}
    for bit in range(128):
        if bit in FIXED_BITS:
            continue
        column = 0
        for i, number in enumerate(numbers):
            column |= ((number >> (127 - bit)) & 1) << i
        assert 0 < column < (1 << len(pids)) - 1, bit  # both values
        assert column not in columns, (bit, columns.get(column))  # not a copy of another bit
        columns[column] = bit


def _check_version_4(pids: list[bytes]) -> None:
    assert len(set(pids)) == len(pids)
    for pid in pids:
        assert len(pid) == 16
        parsed = uuid.UUID(bytes=pid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    _check_free_bits(pids)


def test_customers_made_by_a_batch_and_by_splits_have_version_4_pids(engine):
    # One batch makes 300 customers at once (their random bytes come from one read).
    people = 300
    engine.ingest(
        "acme",
        [
            RecordInput("crm", f"r{i}", [ContactKey("email", f"p{i}@example.com")], T0 + i)
            for i in range(people)
        ]
        + [
            RecordInput(
                "crm",
                f"link{i}",
                [ContactKey("email", f"p{i}@example.com"), ContactKey("phone", f"+4477009{i:05d}")],
                T0 + people + i,
            )
            for i in range(people)
        ],
    )
    made = [pid for pid, _ in _customers(engine)]
    assert len(made) == people
    _check_version_4(made)
    # Splits: each part that does not keep the PID gets a new random one.
    engine.ingest(
        "acme", [RecordInput("crm", f"link{i}", [], 0, deleted=True) for i in range(people)]
    )
    after = [pid for pid, _ in _customers(engine)]
    assert len(after) == 2 * people
    split = [pid for pid in after if pid not in set(made)]
    assert len(split) == people
    _check_version_4(split)


def _customers(engine: IdentityEngine) -> list:
    with engine.read("acme") as view:
        return list(view.txn.iter_customers())
