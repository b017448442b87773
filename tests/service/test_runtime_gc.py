"""A server's runtime sets the cyclic collector's thresholds for a long-running process."""

from __future__ import annotations

import gc

from idlink.service.runtime import SERVER_GC_THRESHOLDS, Runtime


def test_a_server_runtime_raises_the_collector_thresholds():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        Runtime(None, None, None)  # type: ignore[arg-type]
        assert gc.get_threshold() == SERVER_GC_THRESHOLDS
        assert SERVER_GC_THRESHOLDS[0] > 700  # fewer, larger young collections
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.set_threshold(*before)
