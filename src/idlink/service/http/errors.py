"""gRPC statuses as HTTP answers: the HTTP status of a google.rpc.Code, a google.rpc.Status body.

An error that reaches the gateway from the gRPC server keeps its code,
message and details. Details come from ``grpc-status-details-bin`` when the
server sends it; otherwise they are built from idlink's trailing metadata
(``idlink-error-reason`` / ``-field`` / ``-domain``, ``idlink-incident-id``):
an ``ErrorInfo``, a ``BadRequest`` field violation when a field is named, a
``RequestInfo`` carrying the incident id of an internal error. Errors the
gateway finds itself (a body that is not JSON, an unknown route) get the
same shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

# The HTTP status of each google.rpc.Code (the mapping in google/rpc/code.proto,
# as grpc-gateway applies it; CANCELLED is nginx's 499 "client closed request").
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

# idlink's trailing metadata on errors (docs/api.md, "Errors").
REASON_KEY = "idlink-error-reason"
FIELD_KEY = "idlink-error-field"
DOMAIN_KEY = "idlink-error-domain"
INCIDENT_KEY = "idlink-incident-id"
DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_DOMAIN = "idlink.v1"

_PARSE_FIELD = re.compile(r"Failed to parse (\S+) field")


def http_status(code: int) -> int:
    """The HTTP status of a google.rpc.Code number (500 for a number it does not know)."""
    return HTTP_STATUS.get(code, 500)


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def build_status(
    code: int, message: str, *, reason: str = "", field: str = "", domain: str = DEFAULT_DOMAIN
) -> status_pb2.Status:
    """A google.rpc.Status with an ErrorInfo (and a BadRequest when a field is named)."""
    status = status_pb2.Status(code=code, message=message)
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=domain)
        if field:
            info.metadata["field"] = field
        status.details.append(_packed(info))
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=message, reason=reason
        )
        status.details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    return status


def status_of_rpc_error(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status of a failed gRPC call, with its details."""
    code = error.code()
    number = code.value[0] if isinstance(code, grpc.StatusCode) else code_pb2.UNKNOWN
    message = error.details() or ""
    metadata: dict[str, Any] = {}
    for item in error.trailing_metadata() or ():
        metadata.setdefault(item[0], item[1])
    rich = metadata.get(DETAILS_KEY)
    if isinstance(rich, bytes):
        try:
            status = status_pb2.Status.FromString(rich)
        except Exception:  # malformed details: fall back to the metadata below
            status = None
        if status is not None:
            status.code = number
            status.message = status.message or message
            return status
    status = build_status(
        number,
        message,
        reason=str(metadata.get(REASON_KEY, "")),
        field=str(metadata.get(FIELD_KEY, "")),
        domain=str(metadata.get(DOMAIN_KEY, DEFAULT_DOMAIN)),
    )
    incident = metadata.get(INCIDENT_KEY)
    if incident:
        status.details.append(_packed(error_details_pb2.RequestInfo(request_id=str(incident))))
    return status


def parse_error_status(error: Exception, where: str = "") -> status_pb2.Status:
    """INVALID_ARGUMENT for a request the gateway could not turn into a message."""
    text = str(error).split("\n", 1)[0].strip()
    found = _PARSE_FIELD.search(text)
    field = found.group(1) if found else ""
    if where:
        text = f"{where}: {text}"
        field = f"{where}.{field}" if field else where
    return build_status(code_pb2.INVALID_ARGUMENT, text, reason="MALFORMED_REQUEST", field=field)


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """The proto3 JSON form of a google.rpc.Status (``code`` is always present)."""
    body = json_format.MessageToDict(status)
    body["code"] = status.code
    body.setdefault("message", "")
    return body


def status_bytes(status: status_pb2.Status) -> bytes:
    return json.dumps(status_json(status), ensure_ascii=False, separators=(",", ":")).encode()


def error_response(status: status_pb2.Status) -> web.Response:
    """The HTTP answer of a status: its HTTP code and the status as JSON, never cached."""
    return web.Response(
        status=http_status(status.code),
        body=status_bytes(status),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def gateway_error(code: int, message: str, *, reason: str = "", field: str = "") -> web.Response:
    """The HTTP answer of an error the gateway finds itself (no route, bad body, ...)."""
    return error_response(build_status(code, message, reason=reason, field=field))
