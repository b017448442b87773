"""Whether the store can be written (SPEC 9 health), and the watch that keeps health current."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from idlink.store.env import Store
from idlink.v1 import admin_pb2, identity_pb2, profile_pb2

log = logging.getLogger("idlink.server")

# The services health reports on ("" is the server as a whole).
SERVICE_NAMES = (
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


class StoreHealth:
    """Whether the store can be written now (SPEC 9 health), and recovery after a failed write.

    A failed commit stops the store's writer (design.md): the probe reopens the
    store, then checks the free disk space and commits a tiny write. ``None``
    means "cannot tell yet" (the writer is busy with a long write).
    """

    def __init__(self, store: Store, min_free_bytes: int, timeout: float = 10.0) -> None:
        self.store = store
        self.min_free_bytes = min_free_bytes
        self.timeout = timeout

    def probe(self) -> tuple[bool | None, str]:
        """(writable, why not) after trying to recover a failed store."""
        return self.store.probe(self.min_free_bytes, self.timeout)


async def set_status(servicer: health.aio.HealthServicer, serving: bool) -> None:
    """Health of the server and of every idlink service: SERVING or NOT_SERVING."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await servicer.set(name, status)


async def watch_store_health(
    store_health: StoreHealth, health_servicer: health.aio.HealthServicer, interval: float
) -> None:
    """Probe the store every ``interval`` seconds; health follows the probe."""
    loop = asyncio.get_running_loop()
    serving = True
    while True:
        await asyncio.sleep(interval)
        writable, reason = await loop.run_in_executor(None, store_health.probe)
        if writable is None or writable == serving:
            continue
        serving = writable
        await set_status(health_servicer, serving)
        if serving:
            log.warning("store writable again: SERVING")
        else:
            log.error("store cannot be written: NOT_SERVING", extra={"reason": reason})
