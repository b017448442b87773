"""Cyclic garbage collection paused while a batch of short-lived objects is alive."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while the block runs (a batch applied, a generation loaded).

    A batch holds many small objects that live until it ends and makes no
    reference cycles: collections during it find next to nothing to free,
    and every full one walks the whole heap (about a fifth of the writer's
    time in the engine ingest benchmark, measured with gc.callbacks; for a
    load, a time that grows faster than its size). Garbage any thread makes
    meanwhile is collected after the block, at the next allocation.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
