"""Issue 12: kill -9 at random points of ``idlink load`` while a client ingests.

The short run of ``tests/reliability/crash_load.py``
(``python -m tests.reliability.crash_load --kills 10`` prints its figures).
"""

from __future__ import annotations

import pytest

from tests.reliability import crash_load


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_load_leaves_the_old_or_the_new_generation(tmp_path):
    # Rounds 1 and 3 die inside the switch transaction and in the middle of the drop.
    steps = ("in-switch", "mid-drop")
    report = crash_load.run(tmp_path, kills=3, seed=5, steps=steps, log=lambda _: None)
    assert report.steps_killed == ["in-switch", "mid-drop"]
    assert report.kills >= 1
    assert report.loads_completed >= 4  # the first load, and the load after each round
    assert report.batches_acked > 0
    assert report.missing_acked_records == []
    # Never a mix, idlink check clean after each kill and each load, nothing left behind.
    assert report.problems == []
