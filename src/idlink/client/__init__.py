"""The idlink Python client: ``IdlinkClient`` and the ``idlink ingest`` / ``resolve`` commands."""

from idlink.client.client import (
    RETRYABLE_CODES,
    ContactLike,
    IdlinkClient,
    IdlinkError,
    contact_key,
    to_timestamp,
)

__all__ = [
    "RETRYABLE_CODES",
    "ContactLike",
    "IdlinkClient",
    "IdlinkError",
    "contact_key",
    "to_timestamp",
]
