"""Calls the API tests make again and again, in one place."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import identity_pb2

# Observation times in the tests count seconds from here.
EPOCH_SECONDS = 1_700_000_000


def at(seconds: int) -> Timestamp:
    """The observation time ``seconds`` after the tests' epoch."""
    return Timestamp(seconds=EPOCH_SECONDS + seconds)


def link(
    stubs: Any,
    account: str,
    record_id: str,
    *contacts: Any,
    source: str = "crm",
    seconds: int = 0,
    metadata: Any = None,
    timeout: float | None = None,
    **fields: Any,
) -> identity_pb2.LinkResponse:
    """Link one record of ``source`` holding ``contacts``, observed ``seconds`` after the epoch."""
    request = identity_pb2.LinkRequest(
        account=account,
        source=source,
        record_id=record_id,
        contacts=list(contacts),
        observed_at=at(seconds),
        **fields,
    )
    return stubs.identity.Link(request, metadata=metadata, timeout=timeout)  # type: ignore[no-any-return]


def resolve(
    stubs: Any, account: str, contact: Any, create: bool = False
) -> identity_pb2.ResolveResponse:
    """Resolve one contact (creating its customer with ``create``)."""
    request = identity_pb2.ResolveRequest(
        account=account, contact=contact, create_if_missing=create
    )
    return stubs.identity.Resolve(request)  # type: ignore[no-any-return]
