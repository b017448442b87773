"""The HTTP/JSON API through a real server: bindings, JSON mapping, roles, masking, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idlink.service.http.openapi import openapi_bytes
from idlink.service.http.routes import load_routes, unbound_methods

from .conftest import HttpServer, contact, details_of

ROOT = Path(__file__).resolve().parents[2]
PHONE = "+1 (555) 123-4567"
EMAIL = "John.Smith@Company.com"


def _link(server: HttpServer, token: str, account: str, record_id: str, *contacts, second=0):
    answer = server.request(
        "POST",
        f"/v1/accounts/{account}/records:link",
        {
            "source": "crm",
            "recordId": record_id,
            "contacts": list(contacts),
            "observedAt": f"2024-01-01T00:00:{second:02d}Z",
        },
        token=token,
    )
    assert answer.status == 200, answer.body
    return answer.json


def _resolve(server: HttpServer, token: str, account: str, key: dict, **extra):
    return server.request(
        "POST",
        f"/v1/accounts/{account}/contacts:resolve",
        {"contact": key, **extra},
        token=token,
    )


# -- bindings and the description ------------------------------------------------------------


def test_every_rpc_of_the_three_services_has_an_http_binding():
    assert unbound_methods() == []
    routes = load_routes()
    assert len(routes) == 34
    for route in routes:
        assert route.template.startswith("/v1/accounts/{"), route.name
        name = route.method.name
        if name.startswith(("Get", "List", "Export")) or name == "WatchChanges":
            assert route.verb == "GET" and not route.body, route.name
        else:
            assert route.verb == "POST" and route.body == "*", route.name


def test_openapi_is_served_and_docs_copy_is_current(http_server: HttpServer):
    served = http_server.request("GET", "/openapi.json")
    assert served.status == 200
    assert served.headers["content-type"].startswith("application/json")
    generated = openapi_bytes()
    assert served.body == generated
    committed = (ROOT / "docs" / "openapi.json").read_bytes()
    assert committed == generated, (
        "docs/openapi.json is stale: run "
        "`.venv/bin/python -m idlink.service.http.openapi > docs/openapi.json`"
    )
    document = json.loads(generated)
    assert document["openapi"].startswith("3.")
    operations = {
        op["operationId"]
        for item in document["paths"].values()
        for op in item.values()
        if "operationId" in op
    }
    for route in load_routes():
        assert f"{route.service}_{route.method.name}" in operations


# -- the JSON mapping -------------------------------------------------------------------------


def test_link_and_resolve_speak_proto3_json(http_server: HttpServer, tokens, account):
    linked = _link(
        http_server,
        tokens["writer"],
        account,
        "r1",
        contact("phone", PHONE),
        contact("email", EMAIL),
    )
    assert linked["outcome"] == "RECORD_OUTCOME_APPLIED"
    assert len(linked["contactPids"]) == 2
    customer_pid = linked["customer"]["customerPid"]

    found = _resolve(
        http_server, tokens["agent"], account, contact("email", "john.smith@company.com")
    )
    assert found.status == 200
    body = found.json
    assert body["status"] == "RESOLVE_STATUS_FOUND"
    assert body["customer"]["customerPid"] == customer_pid
    values = sorted(c["value"] for c in body["customer"]["contacts"])
    assert values == ["+15551234567", "john.smith@company.com"]
    # The proto field names are accepted as well as lowerCamelCase.
    again = http_server.request(
        "POST",
        f"/v1/accounts/{account}/contacts:resolve",
        {"contact": {"type": "phone", "value": "+15551234567"}, "create_if_missing": False},
        token=tokens["agent"],
    )
    assert again.json["customer"]["customerPid"] == customer_pid


def test_get_reads_take_path_and_query(http_server: HttpServer, tokens, account):
    linked = _link(http_server, tokens["writer"], account, "r1", contact("phone", PHONE))
    pid = linked["customer"]["customerPid"]
    got = http_server.request(
        "GET", f"/v1/accounts/{account}/customers/{pid}", token=tokens["agent"]
    )
    assert got.status == 200 and got.json["customerPid"] == pid
    for second in range(3):
        recorded = http_server.request(
            "POST",
            f"/v1/accounts/{account}/engagements",
            {
                "contact": contact("phone", PHONE),
                "channel": "voice",
                "occurredAt": f"2024-02-01T00:00:0{second}Z",
                "summary": f"call {second}",
            },
            token=tokens["writer"],
        )
        assert recorded.status == 200, recorded.body
    first = http_server.request(
        "GET", f"/v1/accounts/{account}/customers/{pid}/journey?pageSize=2", token=tokens["agent"]
    )
    assert first.status == 200
    assert [e["summary"] for e in first.json["engagements"]] == ["call 0", "call 1"]
    token = first.json["nextPageToken"]
    second = http_server.request(
        "GET",
        f"/v1/accounts/{account}/customers/{pid}/journey?page_size=2&page_token={token}",
        token=tokens["agent"],
    )
    assert [e["summary"] for e in second.json["engagements"]] == ["call 2"]
    assert "nextPageToken" not in second.json


def test_update_customer_keeps_markup_as_data(http_server: HttpServer, tokens, account):
    linked = _link(http_server, tokens["writer"], account, "r1", contact("phone", PHONE))
    pid = linked["customer"]["customerPid"]
    label = '<img src=x onerror="alert(1)">'
    updated = http_server.request(
        "POST",
        f"/v1/accounts/{account}/customers/{pid}:update",
        {"customer": {"customerPid": pid}, "addLabels": [label, "VIP"]},
        token=tokens["agent"],
    )
    assert updated.status == 200, updated.body
    assert updated.json["labels"] == [label, "VIP"]
    assert updated.headers["content-type"].startswith("application/json")


# -- roles and masking ------------------------------------------------------------------------


def test_reader_sees_masked_values_and_agent_sees_them_in_clear(
    http_server: HttpServer, tokens, account
):
    _link(
        http_server,
        tokens["writer"],
        account,
        "r1",
        contact("phone", PHONE),
        contact("email", EMAIL),
    )
    key = contact("email", EMAIL)
    reader = _resolve(http_server, tokens["reader"], account, key).json
    agent = _resolve(http_server, tokens["agent"], account, key).json
    clear = sorted(c["value"] for c in agent["customer"]["contacts"])
    masked = sorted(c["value"] for c in reader["customer"]["contacts"])
    assert clear == ["+15551234567", "john.smith@company.com"]
    assert all("*" in value for value in masked), masked
    assert not set(masked) & set(clear)
    assert "john.smith" not in json.dumps(reader) and "5551234567" not in json.dumps(reader)


def test_roles_are_those_of_grpc(http_server: HttpServer, tokens, account):
    denied = http_server.request(
        "POST",
        f"/v1/accounts/{account}/records:link",
        {"source": "crm", "recordId": "r1", "contacts": [contact("phone", PHONE)]},
        token=tokens["reader"],
    )
    assert denied.status == 403
    assert denied.json["code"] == 7
    assert "reader" in denied.json["message"]
    listed = http_server.request("GET", f"/v1/accounts/{account}/apiKeys", token=tokens["agent"])
    assert listed.status == 403
    keys = http_server.request("GET", f"/v1/accounts/{account}/apiKeys", token=tokens["admin"])
    assert keys.status == 200 and len(keys.json["keys"]) == 4


def test_http_calls_are_audited_as_grpc_calls(http_server: HttpServer, tokens, account):
    linked = _link(http_server, tokens["writer"], account, "r1", contact("phone", PHONE))
    pid = linked["customer"]["customerPid"]
    http_server.request("GET", f"/v1/accounts/{account}/customers/{pid}", token=tokens["reader"])
    events = http_server.request(
        "GET", f"/v1/accounts/{account}/auditEvents?customer_pid={pid}", token=tokens["admin"]
    )
    assert events.status == 200, events.body
    methods = [e["method"] for e in events.json.get("events", [])]
    assert "/idlink.v1.ProfileService/GetCustomer" in methods
    assert "/idlink.v1.IdentityService/Link" in methods


# -- errors as google.rpc.Status -------------------------------------------------------------


def test_missing_and_unknown_keys_are_401(http_server: HttpServer, account):
    missing = _resolve(http_server, "", account, contact("phone", PHONE))
    assert missing.status == 401
    assert missing.json["code"] == 16 and missing.json["message"]
    unknown = _resolve(http_server, "idl_not-a-key", account, contact("phone", PHONE))
    assert unknown.status == 401 and unknown.json["code"] == 16


def test_another_account_is_403(http_server: HttpServer, tokens, account):
    other = _resolve(http_server, tokens["admin"], account + "-other", contact("phone", PHONE))
    assert other.status == 403 and other.json["code"] == 7


def test_invalid_argument_carries_error_info_and_field_violation(
    http_server: HttpServer, tokens, account
):
    answer = _resolve(http_server, tokens["reader"], account, contact("fax", "123"))
    assert answer.status == 400
    status = answer.json
    assert status["code"] == 3
    info = details_of(status, "ErrorInfo")
    assert info and info[0]["reason"] and info[0]["domain"]
    violations = details_of(status, "BadRequest")[0]["fieldViolations"]
    assert violations[0]["field"] == "contact.type"


def test_unknown_customer_is_404(http_server: HttpServer, tokens, account):
    answer = http_server.request(
        "GET",
        f"/v1/accounts/{account}/customers/00000000-0000-4000-8000-000000000000",
        token=tokens["reader"],
    )
    assert answer.status == 404 and answer.json["code"] == 5


def test_bad_json_and_unknown_fields_are_400_naming_the_field(
    http_server: HttpServer, tokens, account
):
    path = f"/v1/accounts/{account}/contacts:resolve"
    broken = http_server.request(
        "POST",
        path,
        raw=b"{not json",
        token=tokens["reader"],
        headers={"Content-Type": "application/json"},
    )
    assert broken.status == 400 and broken.json["code"] == 3
    typo = http_server.request(
        "POST", path, {"contact": {"typ": "phone", "value": "1"}}, token=tokens["reader"]
    )
    assert typo.status == 400
    assert "typ" in typo.json["message"]
    assert details_of(typo.json, "BadRequest")[0]["fieldViolations"][0]["field"] == "contact"
    query = http_server.request(
        "GET", f"/v1/accounts/{account}/apiKeys?page_size=many", token=tokens["admin"]
    )
    assert query.status == 400
    assert details_of(query.json, "BadRequest")[0]["fieldViolations"][0]["field"] == "page_size"


def test_body_naming_another_account_than_the_path_is_refused(
    http_server: HttpServer, tokens, account
):
    answer = http_server.request(
        "POST",
        f"/v1/accounts/{account}/contacts:resolve",
        {"account": "someone-else", "contact": contact("phone", PHONE)},
        token=tokens["admin"],
    )
    assert answer.status == 400
    assert details_of(answer.json, "BadRequest")[0]["fieldViolations"][0]["field"] == "account"


def test_a_form_post_is_refused(http_server: HttpServer, tokens, account):
    """A cross-site form can send text/plain or form data; the API takes only JSON."""
    answer = http_server.request(
        "POST",
        f"/v1/accounts/{account}/contacts:resolve",
        raw=b'{"contact":{"type":"phone","value":"1"}}',
        token=tokens["reader"],
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status == 415 and answer.json["code"] == 3


def test_unknown_route_and_wrong_method(http_server: HttpServer, tokens, account):
    missing = http_server.request("GET", "/v1/nothing-here", token=tokens["reader"])
    assert missing.status == 404 and missing.json["code"] == 5
    wrong = http_server.request(
        "GET", f"/v1/accounts/{account}/contacts:resolve", token=tokens["reader"]
    )
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json["code"] == 12


def test_responses_carry_no_store_and_nosniff(http_server: HttpServer, tokens, account):
    answer = _resolve(http_server, tokens["reader"], account, contact("phone", PHONE))
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in answer.headers
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("role", ["reader", "writer"])
def test_merge_needs_an_agent(http_server: HttpServer, tokens, account, role):
    answer = http_server.request(
        "POST",
        f"/v1/accounts/{account}/customers:mergeKeys",
        {"contacts": [contact("phone", PHONE), contact("email", EMAIL)]},
        token=tokens[role],
    )
    assert answer.status == 403
