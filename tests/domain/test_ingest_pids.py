"""New customer PIDs are random RFC 9562 version 4 UUIDs (SPEC 3.5): nothing about a contact."""

from __future__ import annotations

import uuid

from idlink.domain.pids import new_customer_pid


def test_new_customer_pids_are_random_version_4_uuids():
    pids = [new_customer_pid() for _ in range(2_000)]
    assert len(set(pids)) == len(pids)
    for pid in pids:
        assert len(pid) == 16
        parsed = uuid.UUID(bytes=pid)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every bit outside the version and variant bits takes both values.
    for bit in range(128):
        if bit in (48, 49, 50, 51, 64, 65):
            continue
        values = {(int.from_bytes(pid, "big") >> (127 - bit)) & 1 for pid in pids}
        assert values == {0, 1}, bit
