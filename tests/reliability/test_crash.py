"""SPEC 9: after kill -9 at any point of an ingest, every acknowledged record is there.

The short run of ``tests/reliability/crash.py`` (``make crash-test`` runs at
least 20 kills and prints its figures).
"""

from __future__ import annotations

from tests.reliability import crash


def test_acknowledged_records_survive_kill_9_during_ingest(tmp_path):
    report = crash.run(tmp_path, kills=4, seed=7, batch_size=50, log=lambda _: None)
    assert report.kills == 4
    assert report.batches_acked > 0
    assert report.missing_acked_records == []
    # Partition equals a rebuild, cap and key limits, indexes, redirects (idlink check).
    assert report.problems == []
