"""The gateway's pieces without a server: routes from the annotations, requests, status mapping."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2

from idlink.service.http import errors
from idlink.service.http.routes import RouteError, build_request, load_routes

ROUTES = {route.name: route for route in load_routes()}


def test_paths_match_with_percent_encoded_variables_and_custom_verbs():
    get = ROUTES["ProfileService.GetCustomer"]
    export = ROUTES["AdminService.ExportCustomer"]
    assert get.match("/v1/accounts/acme%20eu/customers/abc") == {
        "account": "acme eu",
        "customer_pid": "abc",
    }
    # The custom method is its own route, and the more specific one is tried first.
    assert export.match("/v1/accounts/acme/customers/abc:export") == {
        "account": "acme",
        "customer_pid": "abc",
    }
    names = [r.name for r in load_routes()]
    assert names.index("AdminService.ExportCustomer") < names.index("ProfileService.GetCustomer")
    assert get.match("/v1/accounts/acme/customers/abc/journey") is None
    assert ROUTES["ProfileService.UpdateSchema"].variables == ("schema.account",)


def test_query_parameters_fill_typed_nested_and_repeated_fields():
    route = ROUTES["AdminService.ListAuditEvents"]
    message = build_request(
        route,
        {"account": "acme"},
        [("pageSize", "50"), ("start_time", "2024-01-01T00:00:00Z"), ("key_id", "key_1")],
        b"",
    )
    assert message.account == "acme" and message.page_size == 50 and message.key_id == "key_1"
    assert message.start_time.seconds == 1704067200
    with pytest.raises(RouteError) as error:
        build_request(route, {"account": "acme"}, [("nothing", "1")], b"")
    assert error.value.field == "nothing"
    with pytest.raises(json_format.ParseError):
        build_request(route, {"account": "acme"}, [("page_size", "lots")], b"")


def test_a_body_is_parsed_in_either_spelling_and_the_path_wins_only_when_silent():
    route = ROUTES["IdentityService.Resolve"]
    body = json.dumps({"contact": {"type": "phone", "value": "1"}, "create_if_missing": True})
    message = build_request(route, {"account": "acme"}, [], body.encode())
    assert message.account == "acme" and message.create_if_missing
    camel = build_request(
        route, {"account": "acme"}, [], b'{"contact": {"type": "phone"}, "createIfMissing": true}'
    )
    assert camel.create_if_missing
    with pytest.raises(RouteError) as error:
        build_request(route, {"account": "acme"}, [], b'{"account": "other"}')
    assert error.value.field == "account"
    for bad in (b"[1, 2]", b"{nope", b'"text"'):
        with pytest.raises(RouteError):
            build_request(route, {"account": "acme"}, [], bad)


def test_every_grpc_code_has_its_http_status():
    expected = {
        "OK": 200,
        "CANCELLED": 499,
        "UNKNOWN": 500,
        "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403,
        "UNAUTHENTICATED": 401,
        "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400,
        "ABORTED": 409,
        "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
        "DATA_LOSS": 500,
    }
    assert {name: errors.http_status(number) for name, number in code_pb2.Code.items()} == expected


def test_a_status_names_its_field_in_error_info_and_bad_request():
    status = errors.status_json(
        errors.build_status(3, "bad type", reason="UNKNOWN_KEY_TYPE", field="contact.type")
    )
    assert status["code"] == 3 and status["message"] == "bad type"
    kinds = [d["@type"].rsplit(".", 1)[1] for d in status["details"]]
    assert kinds == ["ErrorInfo", "BadRequest"]
    assert status["details"][0]["metadata"] == {"field": "contact.type"}
    assert status["details"][1]["fieldViolations"][0]["field"] == "contact.type"
