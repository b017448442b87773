"""OpenAPI 3 description of the HTTP/JSON API, generated from the descriptors and their annotations.

``python -m idlink.service.http.openapi`` prints it; docs/openapi.json is
that output, committed, and a test fails when it is stale. Schemas follow the
proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings, enums
by name, Timestamp as an RFC 3339 string, FieldMask as a comma-separated string.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf import descriptor

import idlink
from idlink.service.http import console_auth
from idlink.service.http.routes import BIDI_STREAM, SERVER_STREAM, Route, load_routes

_FD = descriptor.FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    _FD.TYPE_INT64: {"type": "string", "format": "int64"},
    _FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    _FD.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _FD.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    _FD.TYPE_BOOL: {"type": "boolean"},
    _FD.TYPE_STRING: {"type": "string"},
    _FD.TYPE_BYTES: {"type": "string", "format": "byte"},
    _FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _FD.TYPE_SINT64: {"type": "string", "format": "int64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "example": "labels,preferences"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}
STATUS_SCHEMA = "google.rpc.Status"
NDJSON = "application/x-ndjson"


class _Schemas:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, message: descriptor.Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder: breaks cycles
            self.schemas[message.full_name] = self._message(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def ref_status(self) -> dict[str, Any]:
        if STATUS_SCHEMA not in self.schemas:
            self.schemas[STATUS_SCHEMA] = {
                "type": "object",
                "description": "google.rpc.Status in its proto3 JSON form.",
                "properties": {
                    "code": {
                        "type": "integer",
                        "format": "int32",
                        "description": "google.rpc.Code",
                    },
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": dict(_WELL_KNOWN["google.protobuf.Any"])},
                },
                "required": ["code", "message"],
            }
        return {"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}

    def _enum(self, enum: descriptor.EnumDescriptor) -> dict[str, Any]:
        return {"type": "string", "enum": [value.name for value in enum.values]}

    def field(self, fd: descriptor.FieldDescriptor) -> dict[str, Any]:
        if fd.type == _FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            value = fd.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(fd)
        if fd.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, fd: descriptor.FieldDescriptor) -> dict[str, Any]:
        if fd.type == _FD.TYPE_MESSAGE:
            return self.ref(fd.message_type)
        if fd.type == _FD.TYPE_ENUM:
            return self._enum(fd.enum_type)
        return dict(_SCALARS[fd.type])

    def _message(self, message: descriptor.Descriptor) -> dict[str, Any]:
        properties = {fd.json_name: self.field(fd) for fd in message.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        oneofs = [o for o in message.oneofs if not o.name.startswith("_")]
        if oneofs:
            schema["description"] = "; ".join(
                "at most one of " + ", ".join(f.json_name for f in o.fields) for o in oneofs
            )
        return schema


def _query_parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    """The request fields a GET takes in its query (scalars and repeated scalars)."""
    out = []
    for fd in route.method.input_type.fields:
        if fd.name in route.variables:
            continue
        if fd.type == _FD.TYPE_MESSAGE and fd.message_type.full_name not in (
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
            "google.protobuf.FieldMask",
        ):
            continue
        out.append({"name": fd.name, "in": "query", "required": False, "schema": schemas.field(fd)})
    return out


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.variables
    ]
    if not route.body:
        parameters += _query_parameters(route, schemas)
    errors = {
        "default": {
            "description": "An error: the HTTP status of its google.rpc.Code.",
            "content": {"application/json": {"schema": schemas.ref_status()}},
        }
    }
    response = schemas.ref(route.method.output_type)
    operation: dict[str, Any] = {
        "operationId": f"{route.service}_{route.method.name}",
        "tags": [route.service],
        "summary": f"{route.method.containing_service.full_name}.{route.method.name}",
        "parameters": parameters,
    }
    request = schemas.ref(route.method.input_type)
    if route.kind == BIDI_STREAM:
        operation["description"] = (
            "Newline-delimited JSON both ways: one request message per line in, one "
            "response message per line out; an error ends the answer with a line "
            '{"error": google.rpc.Status}.'
        )
        operation["requestBody"] = {"required": True, "content": {NDJSON: {"schema": request}}}
        ok = {"description": "One response per line.", "content": {NDJSON: {"schema": response}}}
    elif route.kind == SERVER_STREAM:
        operation["description"] = (
            "A stream: Server-Sent Events (Accept: text/event-stream; events `changes` "
            "and `error`, id = the last seq) or newline-delimited JSON."
        )
        ok = {
            "description": "One response message per event or line.",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}},
                NDJSON: {"schema": response},
            },
        }
    else:
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": request}},
            }
        ok = {"description": "OK", "content": {"application/json": {"schema": response}}}
    operation["responses"] = {"200": ok, **errors}
    return operation


def openapi() -> dict[str, Any]:
    """The OpenAPI 3 document of every HTTP binding."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(load_routes(), key=lambda r: (r.template, r.verb)):
        paths.setdefault(route.template, {})[route.verb.lower()] = _operation(route, schemas)
    # The gateway's own routes (console sign-in), which are not RPCs.
    for path, item in console_auth.openapi_paths(schemas.ref_status()).items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "idlink HTTP/JSON API",
            "version": idlink.__version__,
            "description": (
                "Every RPC of idlink.v1 over HTTP (docs/http.md). Authenticate with "
                "'Authorization: Bearer <API key>'; an interactive key also sends "
                "'X-Idlink-Session' (docs/console.md)."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(sorted(schemas.schemas.items())),
        },
    }


def openapi_bytes() -> bytes:
    return (json.dumps(openapi(), indent=2, sort_keys=False) + "\n").encode()


if __name__ == "__main__":
    sys.stdout.write(openapi_bytes().decode())
