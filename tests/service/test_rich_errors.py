"""Errors are standard: a google.rpc.Status with ErrorInfo, and BadRequest when a field is at fault.

Any gRPC client reads them with ``rpc_status.from_call`` (AIP-193). Every
reason is ``UPPER_SNAKE``, in the table of docs/api.md, with one status.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from idlink.client.client import IdlinkError as ClientError
from idlink.errors import InvalidArgument
from idlink.service.interceptors import CallInterceptor
from idlink.service.status import ERROR_DOMAIN, guard_unary
from idlink.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
)
from tests.service.conftest import admin_token, key

ROOT = Path(__file__).resolve().parents[2]
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


def documented_reasons() -> dict[str, str]:
    """The reason table of docs/api.md: reason -> status name (each reason listed once)."""
    text = (ROOT / "docs" / "api.md").read_text()
    table = text.split("<!-- reasons:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| `([A-Z_]+)` \|", table, re.MULTILINE)
    reasons = [reason for reason, _ in rows]
    assert len(reasons) == len(set(reasons)), "a reason is listed twice in docs/api.md"
    return dict(rows)


REASONS = documented_reasons()


def standard_details(error: grpc.RpcError) -> tuple[status_pb2.Status, dict[str, object]]:
    """The google.rpc.Status of a failed call, read the standard way, and its details by type."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error has no google.rpc.Status"
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                assert kind.__name__ not in found, f"two {kind.__name__} details"
                found[kind.__name__] = message
    return status, found


def assert_standard(
    error: grpc.RpcError, code: grpc.StatusCode, reason: str, field: str | None = None
) -> error_details_pb2.ErrorInfo:
    """The error is ``code`` with an ErrorInfo of ``reason`` (and a BadRequest for ``field``)."""
    assert error.code() == code  # type: ignore[attr-defined]
    status, found = standard_details(error)
    assert status.code == code.value[0]
    assert status.message == error.details()  # type: ignore[attr-defined]
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == reason
    assert info.domain == ERROR_DOMAIN
    assert REASONS.get(info.reason) == code.name, f"{info.reason} is not documented as {code.name}"
    if field is None:
        assert "BadRequest" not in found
        assert "field" not in info.metadata
    else:
        bad = found["BadRequest"]
        assert isinstance(bad, error_details_pb2.BadRequest)
        assert [v.field for v in bad.field_violations] == [field]
        assert bad.field_violations[0].description == status.message
        assert info.metadata["field"] == field
    return info


def test_a_field_error_names_the_field_in_bad_request(client, account):
    with pytest.raises(grpc.RpcError) as caught:
        client.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("", "x@example.com"))
        )
    assert_standard(
        caught.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "contact.type"
    )


def test_a_specific_reason_travels_in_error_info(client, account):
    with pytest.raises(grpc.RpcError) as caught:
        client.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("shoe", "42"))
        )
    assert_standard(
        caught.value, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_KEY_TYPE", "contact.type"
    )


def test_an_unknown_customer_is_not_found_with_error_info(client, account):
    with pytest.raises(grpc.RpcError) as caught:
        client.profile.GetCustomer(
            profile_pb2.GetCustomerRequest(account=account, customer_pid=str(uuid.uuid4()))
        )
    assert_standard(caught.value, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("nobody", "API_KEY_MISSING"),
        ("a made-up token", "API_KEY_UNKNOWN"),
    ],
)
def test_an_unauthenticated_caller_is_told_why(client, account, who, reason):
    stub = identity_pb2_grpc.IdentityServiceStub(client.raw_channel)
    metadata = () if who == "nobody" else (("authorization", "Bearer not-a-key"),)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("email", "a@example.com")),
            metadata=metadata,
        )
    assert_standard(caught.value, grpc.StatusCode.UNAUTHENTICATED, reason)


def test_a_role_below_the_minimum_and_another_account_have_their_own_reasons(
    server, client, account
):
    reader = (("authorization", f"Bearer {admin_token(server.data, account, 'reader')}"),)
    admin = admin_pb2_grpc.AdminServiceStub(client.raw_channel)
    with pytest.raises(grpc.RpcError) as caught:
        admin.SetAccountPolicy(admin_pb2.SetAccountPolicyRequest(account=account), metadata=reader)
    denied = assert_standard(caught.value, grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")

    identity = identity_pb2_grpc.IdentityServiceStub(client.raw_channel)
    with pytest.raises(grpc.RpcError) as caught:
        identity.Resolve(
            identity_pb2.ResolveRequest(
                account=f"{account}-other", contact=key("email", "a@example.com")
            ),
            metadata=reader,
        )
    other = assert_standard(caught.value, grpc.StatusCode.PERMISSION_DENIED, "OTHER_ACCOUNT")
    assert denied.reason != other.reason


def test_malformed_request_bytes_are_invalid_argument_with_their_reason(server, client, account):
    token = admin_token(server.data, account)
    call = client.raw_channel.unary_unary("/idlink.v1.IdentityService/Resolve")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\xff\xff\xff\xff", metadata=(("authorization", f"Bearer {token}"),))
    assert_standard(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


def test_the_python_client_reads_reason_and_field_from_the_status(client, account):
    with pytest.raises(grpc.RpcError) as caught:
        client.identity.Resolve(
            identity_pb2.ResolveRequest(account=account, contact=key("shoe", "42"))
        )
    error = caught.value
    # Only the standard trailer: the client needs nothing else.
    standard = [m for m in error.trailing_metadata() if m.key == "grpc-status-details-bin"]

    class OnlyStandard(grpc.RpcError):
        def code(self):
            return error.code()

        def details(self):
            return error.details()

        def trailing_metadata(self):
            return standard

    seen = ClientError.from_rpc_error(OnlyStandard())
    assert (seen.reason, seen.field) == ("UNKNOWN_KEY_TYPE", "contact.type")


# -- without a server: shedding and bugs ------------------------------------------------------


class Aborted(Exception):
    pass


class FakeContext:
    """What the interceptors and guards use of a grpc.aio ServicerContext."""

    def __init__(self) -> None:
        self.code_: grpc.StatusCode | None = None
        self.details_ = ""
        self.trailing: tuple[tuple[str, object], ...] = ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def code(self) -> grpc.StatusCode | None:
        return self.code_

    def set_trailing_metadata(self, metadata: tuple[tuple[str, object], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code_, self.details_ = code, details
        raise Aborted


def status_of(context: FakeContext) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    """The google.rpc.Status a fake context was aborted with, checked against its code."""
    rich = dict(context.trailing)[rpc_status.GRPC_DETAILS_METADATA_KEY]
    assert isinstance(rich, bytes)
    status = status_pb2.Status.FromString(rich)
    assert context.code_ is not None
    assert status.code == context.code_.value[0]
    assert status.message == context.details_
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    assert REASONS.get(info.reason) == context.code_.name
    return status, info


def test_a_shed_call_says_server_busy_in_error_info():
    interceptor = CallInterceptor(max_concurrent_calls=0, max_streams=0)

    async def behavior(request: object, context: object) -> None:
        raise AssertionError("a shed call never runs")

    handler = interceptor._wrap_unary(behavior, "/idlink.v1.X/Y", interceptor.calls, False)
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(handler(b"", context))
    assert context.code_ == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, info = status_of(context)
    assert info.reason == "SERVER_BUSY"


def test_a_bug_is_internal_with_its_incident_in_error_info():
    class Servicer:
        @guard_unary("Test")
        async def Method(self, request: object, context: FakeContext) -> None:
            raise KeyError("secret internal detail")

    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(Servicer().Method(None, context))
    status, info = status_of(context)
    assert info.reason == "INTERNAL"
    assert info.metadata["incident"] in status.message
    assert "secret" not in status.message and len(status.details) == 1


def test_a_field_error_without_a_server_has_bad_request():
    class Servicer:
        @guard_unary("Test")
        async def Method(self, request: object, context: FakeContext) -> None:
            raise InvalidArgument("seq must increase", reason="SEQ_NOT_INCREASING", field="seq")

    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(Servicer().Method(None, context))
    status, info = status_of(context)
    assert info.reason == "SEQ_NOT_INCREASING" and info.metadata["field"] == "seq"
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert bad.field_violations[0].field == "seq"


# -- the reasons in the code are the documented ones ---------------------------------------------

_LITERAL = re.compile(r"""\breason\s*=\s*["']([A-Za-z0-9_]+)["']""")
# A reason named by a constant; lower-case names pass on a reason made elsewhere.
_NAMED = re.compile(r"""\breason=((?:[a-z_][a-z0-9_]*\.)?_?[A-Z][A-Z0-9_]*)\b""")
# The console's refusals: _refused("CODE", "message", "REASON").
_REFUSED = re.compile(r'_refused\(\s*"([A-Z_]+)",\s*(?:f?"[^"]*"\s*)+,\s*"([A-Z0-9_]+)"')
_CONSTANT = re.compile(r"""^([A-Z][A-Z0-9_]*)\s*=\s*["']([A-Za-z0-9_]+)["']""", re.MULTILINE)
# Not error reasons: why a contact cannot link (domain/contacts.py), which a
# response states in its own field, never in an error.
_NOT_ERRORS = {"_NATIONAL_REASON", "BLOCKED"}


def reasons_in_source() -> dict[str, set[str]]:
    """Every reason an error is built with in src/idlink, by the files that use it."""
    found: dict[str, set[str]] = {}
    sources = sorted((ROOT / "src" / "idlink").rglob("*.py"))
    constants: dict[str, str] = {}
    for path in sources:
        for name, value in _CONSTANT.findall(path.read_text()):
            constants.setdefault(name, value)
    for path in sources:
        if "/v1/" in path.as_posix():
            continue
        text = path.read_text()
        local = dict(_CONSTANT.findall(text))
        for value in _LITERAL.findall(text):
            found.setdefault(value, set()).add(path.name)
        for code, value in _REFUSED.findall(text):
            assert REASONS.get(value) == code, f"{path.name}: {value} is not documented as {code}"
            found.setdefault(value, set()).add(path.name)
        for name in _NAMED.findall(text):
            short = name.rsplit(".", 1)[-1]
            if short in _NOT_ERRORS:
                continue
            value = local.get(short) or constants.get(short)
            assert value is not None, f"{path.name}: reason={name} is not a string constant"
            found.setdefault(value, set()).add(path.name)
    return found


def test_every_reason_in_the_code_is_upper_snake_and_documented_once():
    used = reasons_in_source()
    assert len(used) > 30  # the scan finds them
    undocumented = {r: sorted(files) for r, files in used.items() if r not in REASONS}
    assert not undocumented, f"reasons missing from docs/api.md: {undocumented}"
    assert all(UPPER_SNAKE.match(reason) for reason in [*used, *REASONS])
    unused = set(REASONS) - set(used)
    assert not unused, f"documented reasons nothing raises: {sorted(unused)}"
