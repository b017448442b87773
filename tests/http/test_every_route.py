"""Every HTTP binding reaches its own RPC on a real server (none is 404, 405 or a crash)."""

from __future__ import annotations

import json

import pytest

from idlink.service.http.routes import BIDI_STREAM, load_routes

from .conftest import HttpServer

PID = "00000000-0000-4000-8000-000000000000"


def _path(template: str, account: str) -> str:
    path = template.replace("{account}", account).replace("{schema.account}", account)
    for name in ("customer_pid", "customer.customer_pid"):
        path = path.replace("{" + name + "}", PID)
    return path.replace("{key_id}", "key_none").replace("{engagement_id}", PID)


# A live change feed never ends by itself: tests/http/test_streams.py reads it.
ROUTES = [r for r in load_routes() if r.method.name != "WatchChanges"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_the_binding_calls_its_rpc(http_server: HttpServer, tokens, account, route):
    path = _path(route.template, account)
    headers = {"Content-Type": "application/x-ndjson"} if route.kind == BIDI_STREAM else {}
    raw = b"" if route.kind == BIDI_STREAM else None
    body = {} if route.verb == "POST" and route.kind != BIDI_STREAM else None
    answer = http_server.request(
        route.verb, path, body, token=tokens["admin"], raw=raw, headers=headers, timeout=10
    )
    assert answer.status not in (404, 405, 500, 501) or (
        answer.status == 404 and answer.json.get("details", [{}])[0].get("reason") != "NO_ROUTE"
    ), (route.name, answer.status, answer.body[:300])
    if answer.body and answer.status != 200:
        status = json.loads(answer.body)
        assert status["code"] not in (2, 12, 13), (route.name, status)
