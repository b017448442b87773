"""The status mapping: domain errors keep their code, reason and field; bugs say nothing inside."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from idlink.errors import FailedPrecondition, InvalidArgument, NotFound, StoreFull
from idlink.service.status import guard_stream, guard_unary


class Aborted(Exception):
    pass


class FakeContext:
    """What the guards use of a grpc.aio ServicerContext."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: tuple[tuple[str, str], ...] = ()

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted


def call(error: BaseException) -> FakeContext:
    class Servicer:
        @guard_unary("Test")
        async def Method(self, request: object, context: FakeContext) -> None:
            raise error

    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(Servicer().Method(None, context))
    return context


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            InvalidArgument("contact.type is required", field="contact.type"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (NotFound("customer not found"), grpc.StatusCode.NOT_FOUND),
        (
            FailedPrecondition("in use", reason="KEY_TYPE_IN_USE"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (StoreFull("the store map is full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_domain_errors_keep_their_code_reason_and_field(error, code):
    context = call(error)
    assert context.code == code
    assert context.details == error.message
    metadata = dict(context.trailing)
    assert metadata["idlink-error-reason"] == error.reason
    if error.field:
        assert metadata["idlink-error-field"] == error.field


def test_unexpected_errors_are_internal_without_internals(caplog):
    with caplog.at_level(logging.ERROR, logger="idlink.service"):
        context = call(KeyError("secret internal detail"))
    assert context.code == grpc.StatusCode.INTERNAL
    assert "secret" not in context.details and "KeyError" not in context.details
    incident = dict(context.trailing)["idlink-incident-id"]
    assert incident in context.details
    assert any(getattr(r, "incident", None) == incident for r in caplog.records)


def test_stream_errors_are_mapped_after_the_items_sent():
    class Servicer:
        @guard_stream("Test")
        async def Method(self, request: object, context: FakeContext):
            yield 1
            raise InvalidArgument("bad", field="seq")

    async def run(context: FakeContext) -> list[int]:
        got = []
        with pytest.raises(Aborted):
            async for item in Servicer().Method(None, context):
                got.append(item)
        return got

    context = FakeContext()
    assert asyncio.run(run(context)) == [1]
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(context.trailing)["idlink-error-field"] == "seq"
