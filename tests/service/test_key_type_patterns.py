"""Blocked patterns through a real server: RE2 only, refused with a reason, never a freeze."""

from __future__ import annotations

import grpc
import pytest

from idlink.v1 import admin_pb2 as A
from idlink.v1 import common_pb2
from idlink.v1 import identity_pb2 as I
from tests.service.conftest import error_details, key


def put(client, account: str, *blocked: str) -> common_pb2.KeyType:
    return client.admin.PutKeyType(
        A.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(
                name="membership_id",
                normalizer=common_pb2.NORMALIZER_TRIM,
                blocked_patterns=list(blocked),
            ),
        ),
        timeout=10,
    )


@pytest.mark.parametrize(
    ("pattern", "why"),
    [(r"^(\d)\1+$", "backreference"), (r"^(?!test).+$", "lookaround")],
)
def test_put_key_type_refuses_a_pattern_re2_cannot_run(client, account, pattern, why) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        put(client, account, "^null$", pattern)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert why in caught.value.details()
    assert "key_type.blocked_patterns[1]" in caught.value.details()
    details = error_details(caught.value)
    assert details["idlink-error-field"] == "key_type.blocked_patterns"
    assert details["idlink-error-reason"] == "BLOCKED_PATTERN_UNSUPPORTED"
    # Nothing was stored: the account still has only the default key types.
    listed = client.admin.ListKeyTypes(A.ListKeyTypesRequest(account=account), timeout=10)
    assert "membership_id" not in {k.name for k in listed.key_types}


def test_put_key_type_refuses_too_many_and_too_long_patterns(client, account) -> None:
    for blocked in ([f"^v{i}$" for i in range(33)], ["x" * 257]):
        with pytest.raises(grpc.RpcError) as caught:
            put(client, account, *blocked)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(caught.value)["idlink-error-field"] == "key_type.blocked_patterns"


def test_an_exponential_pattern_does_not_freeze_resolves(client, account) -> None:
    # ^(a+)+$ takes a backtracking engine about a minute on 30 a's and a b, on
    # the event loop, for every tenant; RE2 answers at once. The deadline is
    # only a generous bound on the call.
    stored = put(client, account, r"^(a+)+$")
    assert list(stored.blocked_patterns) == [r"^(a+)+$"]
    for value, status in (("a" * 30 + "b", I.RESOLVE_STATUS_NOT_FOUND), ("a" * 30, None)):
        answer = client.identity.Resolve(
            I.ResolveRequest(account=account, contact=key("membership_id", value)), timeout=20
        )
        if status is None:
            assert answer.status == I.RESOLVE_STATUS_INVALID and answer.reason == "BLOCKED"
        else:
            assert answer.status == status
    health = client.admin.ListKeyTypes(A.ListKeyTypesRequest(account=account), timeout=5)
    assert "membership_id" in {k.name for k in health.key_types}


def test_default_phone_patterns_are_listed_and_accepted_back(client, account) -> None:
    listed = client.admin.ListKeyTypes(A.ListKeyTypesRequest(account=account), timeout=10)
    phone = next(k for k in listed.key_types if k.name == "phone")
    client.admin.PutKeyType(A.PutKeyTypeRequest(account=account, key_type=phone), timeout=10)
    answer = client.identity.Resolve(
        I.ResolveRequest(account=account, contact=key("phone", "777 7777")), timeout=10
    )
    assert answer.status == I.RESOLVE_STATUS_INVALID and answer.reason == "BLOCKED"
