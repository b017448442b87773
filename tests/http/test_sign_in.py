"""People sign in: interactive keys need a TOTP code for the console and for every call."""

from __future__ import annotations

import grpc
import pyotp
import pytest

from idlink.security import totp
from idlink.v1 import common_pb2, identity_pb2, identity_pb2_grpc

from .conftest import HttpServer, contact, details_of


def _make_interactive(server: HttpServer, admin: str, account: str, key_id: str) -> dict:
    answer = server.request(
        "POST",
        f"/v1/accounts/{account}/apiKeys/{key_id}:setInteractive",
        {"interactive": True},
        token=admin,
    )
    assert answer.status == 200, answer.body
    return answer.json


def _key_id(server: HttpServer, admin: str, account: str, role: str) -> str:
    keys = server.request("GET", f"/v1/accounts/{account}/apiKeys", token=admin).json["keys"]
    ids = [k["keyId"] for k in keys if k["role"] == f"ROLE_{role.upper()}"]
    assert len(ids) == 1
    return ids[0]


def _secret(enrolment: dict) -> str:
    return pyotp.parse_uri(enrolment["otpauthUri"]).secret


def _sign_in(server: HttpServer, token: str, account: str, code: str = ""):
    body = {"account": account}
    if code:
        body["code"] = code
    return server.request("POST", "/v1/sessions", body, token=token)


def _resolve(server: HttpServer, token: str, account: str, session: str = ""):
    headers = {"X-Idlink-Session": session} if session else {}
    return server.request(
        "POST",
        f"/v1/accounts/{account}/contacts:resolve",
        {"contact": contact("phone", "+15551234567")},
        token=token,
        headers=headers,
    )


@pytest.fixture
def agent_enrolled(http_server: HttpServer, tokens, account):
    key_id = _key_id(http_server, tokens["admin"], account, "agent")
    enrolment = _make_interactive(http_server, tokens["admin"], account, key_id)
    return key_id, enrolment


def test_a_program_key_signs_in_without_a_code(http_server: HttpServer, tokens, account):
    answer = _sign_in(http_server, tokens["reader"], account)
    assert answer.status == 200
    assert answer.json["role"] == "reader" and answer.json["interactive"] is False
    assert "sessionId" not in answer.json


def test_enrolment_gives_an_otpauth_uri_and_a_qr_code_as_svg(agent_enrolled, account):
    key_id, enrolment = agent_enrolled
    uri = enrolment["otpauthUri"]
    assert uri.startswith("otpauth://totp/idlink:")
    assert key_id in uri and "secret=" in uri
    parsed = pyotp.parse_uri(uri)
    assert parsed.digits == 6 and parsed.interval == 30
    svg = enrolment["qrSvg"]
    assert "<svg" in svg and "<path" in svg and "<script" not in svg


def test_an_interactive_key_alone_is_refused_over_http_and_grpc(
    http_server: HttpServer, tokens, account, agent_enrolled
):
    refused = _resolve(http_server, tokens["agent"], account)
    assert refused.status == 401
    assert details_of(refused.json, "ErrorInfo")[0]["reason"] == "SESSION_REQUIRED"
    assert "TOTP" in refused.json["message"]
    with grpc.insecure_channel(http_server.target) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Resolve(
                identity_pb2.ResolveRequest(
                    account=account, contact=common_pb2.ContactKey(type="phone", value="1")
                ),
                metadata=[("authorization", f"Bearer {tokens['agent']}")],
                timeout=10,
            )
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_sign_in_with_the_code_opens_a_session_for_http_and_grpc(
    http_server: HttpServer, tokens, account, agent_enrolled
):
    _, enrolment = agent_enrolled
    missing = _sign_in(http_server, tokens["agent"], account)
    assert missing.status == 401
    assert details_of(missing.json, "ErrorInfo")[0]["reason"] == "TOTP_REQUIRED"
    wrong = _sign_in(http_server, tokens["agent"], account, "000000")
    code = pyotp.TOTP(_secret(enrolment)).now()
    if code == "000000":  # one chance in a million
        pytest.skip("the current code happens to be 000000")
    assert wrong.status == 401
    assert details_of(wrong.json, "ErrorInfo")[0]["reason"] == "TOTP_INVALID"
    signed = _sign_in(http_server, tokens["agent"], account, code)
    assert signed.status == 200, signed.body
    session = signed.json["sessionId"]
    assert signed.json["role"] == "agent" and signed.json["expireTime"]
    assert _resolve(http_server, tokens["agent"], account, session).status == 200
    # The session is no key by itself, and belongs to its key only.
    assert _resolve(http_server, session, account).status == 401
    assert _resolve(http_server, tokens["writer"], account, session).status == 401
    with grpc.insecure_channel(http_server.target) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        answer = stub.Resolve(
            identity_pb2.ResolveRequest(
                account=account, contact=common_pb2.ContactKey(type="phone", value="+15551234567")
            ),
            metadata=[("authorization", f"Bearer {tokens['agent']}.{session}")],
            timeout=10,
        )
        assert answer.status == identity_pb2.RESOLVE_STATUS_NOT_FOUND
    # The same code is never accepted twice.
    replay = _sign_in(http_server, tokens["agent"], account, code)
    assert replay.status == 401
    # Signing out ends the session.
    out = http_server.request(
        "POST",
        "/v1/sessions:signOut",
        token=tokens["agent"],
        headers={"X-Idlink-Session": session},
    )
    assert out.status == 200
    assert _resolve(http_server, tokens["agent"], account, session).status == 401


def test_wrong_codes_lock_the_sign_in_of_the_key(
    http_server: HttpServer, tokens, account, agent_enrolled
):
    _, enrolment = agent_enrolled
    secret = _secret(enrolment)
    good = pyotp.TOTP(secret).now()
    bad = f"{(int(good) + 1) % 1_000_000:06d}"
    # A wrong code of every other step either side, so none is accepted by the drift window.
    valid = {totp.code_at(secret, totp.current_step() + d) for d in (-1, 0, 1, 2)}
    assert bad not in valid or pytest.skip("the wrong code happens to be valid")
    statuses = [_sign_in(http_server, tokens["agent"], account, bad).status for _ in range(5)]
    assert statuses[:4] == [401, 401, 401, 401]
    assert statuses[4] == 429
    locked = _sign_in(http_server, tokens["agent"], account, good)
    assert locked.status == 429
    assert details_of(locked.json, "ErrorInfo")[0]["reason"] == "SIGN_IN_LOCKED"
    assert int(locked.headers["retry-after"]) > 0


def test_sign_in_attempts_are_audited(http_server: HttpServer, tokens, account, agent_enrolled):
    # The audit log keeps the events of accounts that hold data.
    http_server.request(
        "POST",
        f"/v1/accounts/{account}/records:link",
        {"source": "crm", "recordId": "r1", "contacts": [contact("phone", "+15551234567")]},
        token=tokens["writer"],
    )
    _make_interactive(http_server, tokens["admin"], account, agent_enrolled[0])
    _sign_in(http_server, tokens["agent"], account, "")
    events = http_server.request(
        "GET", f"/v1/accounts/{account}/auditEvents", token=tokens["admin"]
    ).json["events"]
    sign_ins = [e for e in events if e["method"] == "/console/SignIn"]
    assert sign_ins and sign_ins[-1]["outcome"] == "UNAUTHENTICATED"
    assert any(e["method"] == "/console/SetKeyInteractive" for e in events)


def test_only_an_admin_of_the_account_makes_keys_interactive(
    http_server: HttpServer, tokens, account
):
    key_id = _key_id(http_server, tokens["admin"], account, "reader")
    path = f"/v1/accounts/{account}/apiKeys/{key_id}:setInteractive"
    assert (
        http_server.request("POST", path, {"interactive": True}, token=tokens["agent"]).status
        == 403
    )
    other = f"/v1/accounts/{account}-x/apiKeys/{key_id}:setInteractive"
    assert (
        http_server.request("POST", other, {"interactive": True}, token=tokens["admin"]).status
        == 403
    )
    assert http_server.request("POST", path, {"interactive": True}).status == 401
    missing = f"/v1/accounts/{account}/apiKeys/key_nope:setInteractive"
    assert (
        http_server.request("POST", missing, {"interactive": True}, token=tokens["admin"]).status
        == 404
    )


def test_a_key_made_plain_again_works_without_a_session(
    http_server: HttpServer, tokens, account, agent_enrolled
):
    key_id, _ = agent_enrolled
    assert _resolve(http_server, tokens["agent"], account).status == 401
    plain = http_server.request(
        "POST",
        f"/v1/accounts/{account}/apiKeys/{key_id}:setInteractive",
        {"interactive": False},
        token=tokens["admin"],
    )
    assert plain.status == 200 and "otpauthUri" not in plain.json
    assert _resolve(http_server, tokens["agent"], account).status == 200


def test_failed_sign_ins_from_one_address_are_rate_limited(tmp_path):
    server = HttpServer(tmp_path / "data").start()
    try:
        statuses = [
            server.request(
                "POST", "/v1/sessions", {"account": "a"}, token="idl_guessed-key-number-x"
            ).status
            for _ in range(21)
        ]
        assert statuses[:20] == [401] * 20
        assert statuses[20] == 429
    finally:
        assert server.stop() == 0, server.log()[-3000:]
