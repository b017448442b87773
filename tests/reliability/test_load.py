"""SPEC 9: concurrent Resolve callers and a running ingest; the short run of load.py.

Timing on a shared machine varies, so the bounds are generous: they catch a
reader blocked behind the writer (seconds), not a slow one.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from tests.reliability import load

P99_BOUND_MS = 2000.0
RSS_GROWTH_BOUND_KIB = 300 * 1024


def test_resolves_during_ingest_see_no_errors_and_are_not_blocked(tmp_path):
    report = load.run(tmp_path, seconds=6, readers=12)
    print(json.dumps(asdict(report)))
    assert report.errors == {}, "only load shedding (RESOURCE_EXHAUSTED) is allowed"
    assert report.problems == []
    assert report.resolves > 0
    assert report.records_ingested > load.SEED_BATCHES * load.BATCH
    assert report.p99_ms_ingesting < P99_BOUND_MS
    assert report.rss_kib_max - report.rss_kib_start < RSS_GROWTH_BOUND_KIB
