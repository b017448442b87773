"""Bad input over HTTP gets a clear status and a google.rpc.Status, never a crash (hypothesis)."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import HttpServer

EXAMPLES = int(os.environ.get("IDLINK_BAD_INPUT_EXAMPLES", "40"))
CLEAR = {200, 400, 401, 403, 404, 409, 413, 415, 429}
POSTS = (
    "/contacts:resolve",
    "/contacts:batchResolve",
    "/contacts:explain",
    "/contacts:setPolicy",
    "/records:link",
    "/records:delete",
    "/customers:mergeKeys",
    "/customers/00000000-0000-4000-8000-000000000000:update",
    "/engagements",
    ":previewConfigChange",
    "/keyTypes",
)
GETS = (
    "/customers/{pid}",
    "/customers/{pid}/journey",
    "/customers/{pid}/history",
    "/auditEvents",
    "/apiKeys",
    "/isolatedContacts",
)
NAMES = st.sampled_from(
    [
        "contact",
        "contacts",
        "type",
        "value",
        "source",
        "recordId",
        "record_id",
        "observedAt",
        "customer",
        "customerPid",
        "labels",
        "addLabels",
        "updateMask",
        "doNotLink",
        "account",
        "keyType",
        "policy",
        "pageSize",
        "x",
        "",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=12,
)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(answer) -> None:
    assert answer.status in CLEAR, (answer.status, answer.body[:300])
    if answer.status != 200:
        status = json.loads(answer.body)
        assert isinstance(status["code"], int) and status["code"] not in (0, 2, 13)
        assert "Traceback" not in status["message"]


@SETTINGS
@given(path=st.sampled_from(POSTS), body=st.dictionaries(NAMES, JSON, max_size=5))
def test_random_json_bodies(http_server: HttpServer, tokens, account, path, body):
    _check(
        http_server.request("POST", f"/v1/accounts/{account}{path}", body, token=tokens["admin"])
    )


@SETTINGS
@given(path=st.sampled_from(POSTS), raw=st.binary(max_size=200))
def test_random_bytes_as_bodies(http_server: HttpServer, tokens, account, path, raw):
    _check(
        http_server.request(
            "POST",
            f"/v1/accounts/{account}{path}",
            raw=raw,
            token=tokens["admin"],
            headers={"Content-Type": "application/json"},
        )
    )


@SETTINGS
@given(
    path=st.sampled_from(GETS),
    pid=st.text(alphabet="0123456789abcdef-%:.", max_size=40).filter(bool),
    query=st.lists(st.tuples(NAMES, st.text(max_size=12)), max_size=4),
)
def test_random_paths_and_queries(http_server: HttpServer, tokens, account, path, pid, query):
    from urllib.parse import quote, urlencode

    target = f"/v1/accounts/{account}" + path.replace("{pid}", quote(pid, safe="%:"))
    if query:
        target += "?" + urlencode(query)
    _check(http_server.request("GET", target, token=tokens["admin"]))


@SETTINGS
@given(
    lines=st.lists(
        st.one_of(st.binary(max_size=60), JSON.map(lambda v: json.dumps(v).encode())), max_size=5
    )
)
def test_random_ndjson_streams(http_server: HttpServer, tokens, account, lines):
    for path in ("/contacts:streamResolve", "/records:ingest"):
        answer = http_server.request(
            "POST",
            f"/v1/accounts/{account}{path}",
            raw=b"\n".join(line.replace(b"\n", b" ") for line in lines),
            token=tokens["admin"],
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert answer.status in CLEAR, (answer.status, answer.body[:300])
        if answer.status == 200:
            for item in answer.lines():
                if "error" in item:
                    assert item["error"]["code"] not in (0, 2, 13), item
