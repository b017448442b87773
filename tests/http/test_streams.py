"""Streams over HTTP: StreamResolve and Ingest in NDJSON, WatchChanges as SSE or NDJSON."""

from __future__ import annotations

import http.client
import json

from .conftest import HttpServer, contact, details_of


def _ndjson(*items) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def _post_lines(server: HttpServer, path: str, token: str, payload: bytes):
    return server.request(
        "POST", path, raw=payload, token=token, headers={"Content-Type": "application/x-ndjson"}
    )


def test_ingest_takes_ndjson_batches_and_acknowledges_each(
    http_server: HttpServer, tokens, account
):
    batches = [
        {
            "records": [
                {
                    "source": "crm",
                    "recordId": f"r{n}",
                    "contacts": [
                        contact("phone", f"+1555000{n:04d}"),
                        contact("email", "a@b.example"),
                    ],
                    "observedAt": "2024-01-01T00:00:00Z",
                }
            ]
        }
        for n in range(3)
    ]
    answer = _post_lines(
        http_server, f"/v1/accounts/{account}/records:ingest", tokens["writer"], _ndjson(*batches)
    )
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    acks = answer.lines()
    assert acks and int(acks[-1]["committedSeq"]) == 3
    assert sum(a.get("records", 0) for a in acks) == 3
    # The three phones share the email: one customer.
    resolved = http_server.request(
        "POST",
        f"/v1/accounts/{account}/contacts:resolve",
        {"contact": contact("email", "a@b.example")},
        token=tokens["agent"],
    ).json
    assert len(resolved["customer"]["contacts"]) == 4


def test_stream_resolve_answers_one_line_per_request_in_order(
    http_server: HttpServer, tokens, account
):
    lines = _ndjson(
        {"contact": contact("phone", "+15550001111"), "createIfMissing": True},
        {"contact": contact("email", "x@y.example"), "createIfMissing": True},
        {"contact": contact("phone", "+15550001111")},
    )
    answer = _post_lines(
        http_server, f"/v1/accounts/{account}/contacts:streamResolve", tokens["writer"], lines
    )
    assert answer.status == 200, answer.body
    out = answer.lines()
    assert [o["status"] for o in out] == [
        "RESOLVE_STATUS_CREATED",
        "RESOLVE_STATUS_CREATED",
        "RESOLVE_STATUS_FOUND",
    ]
    assert out[0]["customer"]["customerPid"] == out[2]["customer"]["customerPid"]


def test_a_malformed_line_ends_the_stream_after_the_answers_before_it(
    http_server: HttpServer, tokens, account
):
    payload = (
        _ndjson({"contact": contact("phone", "+15550002222"), "createIfMissing": True})
        + b"{this is not json\n"
        + _ndjson({"contact": contact("phone", "+15550003333"), "createIfMissing": True})
    )
    answer = _post_lines(
        http_server, f"/v1/accounts/{account}/contacts:streamResolve", tokens["writer"], payload
    )
    out = answer.lines()
    assert len(out) == 2
    assert out[0]["status"] == "RESOLVE_STATUS_CREATED"
    error = out[1]["error"]
    assert error["code"] == 3 and error["message"].startswith("line 2")
    assert details_of(error, "BadRequest")[0]["fieldViolations"][0]["field"] == "line 2"


def test_a_refused_stream_gets_its_http_status(http_server: HttpServer, tokens, account):
    answer = _post_lines(
        http_server,
        f"/v1/accounts/{account}/records:ingest",
        tokens["reader"],
        _ndjson({"records": []}),
    )
    assert answer.status == 403 and answer.json["code"] == 7


def _read_sse(server: HttpServer, path: str, token: str, wanted: int) -> tuple[int, list]:
    """Read SSE events until ``wanted`` change events came (bounded by the socket timeout)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=20)
    try:
        connection.request(
            "GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        )
        response = connection.getresponse()
        if response.status != 200:
            return response.status, [json.loads(response.read())]
        assert response.getheader("Content-Type").startswith("text/event-stream")
        events: list = []
        current: dict = {}
        changes = 0
        while changes < wanted:
            line = response.readline().decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                    if current.get("event") == "changes":
                        changes += len(json.loads(current["data"])["events"])
                    if current.get("event") == "error":
                        break
                current = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            current[name] = value
        return 200, events
    finally:
        connection.close()


def test_watch_changes_as_server_sent_events(http_server: HttpServer, tokens, account):
    for n in range(2):
        linked = http_server.request(
            "POST",
            f"/v1/accounts/{account}/records:link",
            {
                "source": "crm",
                "recordId": f"r{n}",
                "contacts": [contact("phone", f"+1555111{n:04d}")],
            },
            token=tokens["writer"],
        )
        assert linked.status == 200
    status, events = _read_sse(
        http_server, f"/v1/accounts/{account}/changes:watch", tokens["reader"], 2
    )
    assert status == 200
    changes = [e for e in events if e.get("event") == "changes"]
    seqs = [int(c["seq"]) for e in changes for c in json.loads(e["data"])["events"]]
    assert seqs[:2] == [1, 2]
    assert changes[-1]["id"] == str(seqs[-1])
    # Resuming after the first event replays from the second (Last-Event-ID or after_seq).
    status, resumed = _read_sse(
        http_server, f"/v1/accounts/{account}/changes:watch?after_seq=1", tokens["reader"], 1
    )
    first = json.loads(next(e for e in resumed if e.get("event") == "changes")["data"])
    assert int(first["events"][0]["seq"]) == 2


def test_watch_changes_as_ndjson(http_server: HttpServer, tokens, account):
    http_server.request(
        "POST",
        f"/v1/accounts/{account}/records:link",
        {"source": "crm", "recordId": "r1", "contacts": [contact("phone", "+15552220000")]},
        token=tokens["writer"],
    )
    connection = http.client.HTTPConnection("127.0.0.1", http_server.http_port, timeout=20)
    try:
        connection.request(
            "GET",
            f"/v1/accounts/{account}/changes:watch",
            headers={"Authorization": f"Bearer {tokens['reader']}"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("application/x-ndjson")
        first = json.loads(response.readline())
        assert int(first["events"][0]["seq"]) == 1
        assert first["events"][0]["kind"] == "CHANGE_KIND_CREATED"
    finally:
        connection.close()


def test_watch_changes_refused_without_a_key(http_server: HttpServer, account):
    connection = http.client.HTTPConnection("127.0.0.1", http_server.http_port, timeout=20)
    try:
        connection.request("GET", f"/v1/accounts/{account}/changes:watch")
        response = connection.getresponse()
        body = response.read()
        if response.status == 200:
            # A refusal later than the first second arrives in the stream instead.
            error = json.loads(body.splitlines()[-1])["error"]
        else:
            assert response.status == 401
            error = json.loads(body)
        assert error["code"] == 16
    finally:
        connection.close()


def test_an_error_of_the_server_mid_stream_keeps_its_status(
    http_server: HttpServer, tokens, account
):
    """The server refuses line 2 (no contact): INVALID_ARGUMENT ends the answer, not INTERNAL."""
    for _ in range(5):
        lines = _ndjson(
            {"contact": contact("phone", "+15550004444"), "createIfMissing": True},
            {},
            *[{"contact": contact("phone", "+15550005555")}] * 20,
        )
        answer = _post_lines(
            http_server, f"/v1/accounts/{account}/contacts:streamResolve", tokens["writer"], lines
        )
        out = answer.lines()
        assert len(out) == 2 and out[0]["contactPid"]
        assert out[-1]["error"]["code"] == 3, out[-1]
        batches = _ndjson(
            {
                "records": [
                    {
                        "source": "crm",
                        "recordId": "ok",
                        "contacts": [contact("phone", "+15550006666")],
                    }
                ]
            },
            {"records": [{"source": "crm", "recordId": "", "contacts": []}]},
            *[{"records": []}] * 20,
        )
        ingest = _post_lines(
            http_server, f"/v1/accounts/{account}/records:ingest", tokens["writer"], batches
        )
        acks = ingest.lines()
        assert int(acks[0]["committedSeq"]) == 1
        assert acks[-1]["error"]["code"] == 3, acks[-1]
