"""HTTP routes read from the ``google.api.http`` annotations of the rpc definitions.

Each route knows its HTTP method, its path template (AIP-127: ``{field}``
variables, ``:verb`` custom methods), its body rule (``*`` or none) and the
gRPC method it calls. A request becomes the method's request message: the
JSON body (proto3 JSON mapping: ``lowerCamelCase`` or the proto names), then
the query parameters (``?page_size=10&start_time=2024-01-01T00:00:00Z``,
dotted for nested fields, repeated for lists), then the path variables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2
from google.protobuf import descriptor, json_format, message_factory

from idlink.v1 import admin_pb2, identity_pb2, profile_pb2

SERVICE_FILES = (identity_pb2, profile_pb2, admin_pb2)
SERVICE_NAMES = ("IdentityService", "ProfileService", "AdminService")

UNARY = "unary"
SERVER_STREAM = "server_stream"
BIDI_STREAM = "bidi_stream"

_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")
_FD = descriptor.FieldDescriptor
# Well-known types whose JSON form is one string, so they can come in a query.
_STRING_MESSAGES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


class RouteError(ValueError):
    """A request that cannot become the method's message; ``field`` names the culprit."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(slots=True)
class Route:
    """One HTTP binding of one RPC."""

    service: str
    method: descriptor.MethodDescriptor
    verb: str  # "GET", "POST", ...
    template: str
    body: str  # "*" or ""
    kind: str
    request_class: Any
    response_class: Any
    variables: tuple[str, ...] = ()
    pattern: re.Pattern[str] = field(default=re.compile(""))
    literal_chars: int = 0

    @property
    def full_method(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method.name}"

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        values = found.groups()
        return {name: unquote(v) for name, v in zip(self.variables, values, strict=True)}


def http_rule(method: descriptor.MethodDescriptor) -> Any:
    """The method's google.api.http rule, or None."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    return options.Extensions[annotations_pb2.http]


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...], int]:
    """A path template as a regular expression over the raw (percent-encoded) path."""
    parts: list[str] = []
    names: list[str] = []
    position = 0
    literal = 0
    for found in _VARIABLE.finditer(template):
        text = template[position : found.start()]
        parts.append(re.escape(text))
        literal += len(text)
        parts.append("([^/]+?)")
        names.append(found.group(1))
        position = found.end()
    parts.append(re.escape(template[position:]))
    literal += len(template) - position
    return re.compile("".join(parts)), tuple(names), literal


def _kind(method: descriptor.MethodDescriptor) -> str:
    if method.client_streaming:
        return BIDI_STREAM
    return SERVER_STREAM if method.server_streaming else UNARY


def load_routes() -> list[Route]:
    """Every annotated RPC of the three services, most specific template first."""
    routes: list[Route] = []
    for module, name in zip(SERVICE_FILES, SERVICE_NAMES, strict=True):
        service = module.DESCRIPTOR.services_by_name[name]
        for method in service.methods:
            rule = http_rule(method)
            if rule is None:
                continue
            verb = rule.WhichOneof("pattern")
            if verb is None or verb == "custom":
                continue
            template = getattr(rule, verb)
            pattern, variables, literal = compile_template(template)
            routes.append(
                Route(
                    service=name,
                    method=method,
                    verb=verb.upper(),
                    template=template,
                    body=rule.body,
                    kind=_kind(method),
                    request_class=message_factory.GetMessageClass(method.input_type),
                    response_class=message_factory.GetMessageClass(method.output_type),
                    variables=variables,
                    pattern=pattern,
                    literal_chars=literal,
                )
            )
    routes.sort(key=lambda r: -r.literal_chars)
    return routes


def unbound_methods() -> list[str]:
    """RPCs of the three services without an HTTP binding (there must be none)."""
    missing = []
    for module, name in zip(SERVICE_FILES, SERVICE_NAMES, strict=True):
        for method in module.DESCRIPTOR.services_by_name[name].methods:
            rule = http_rule(method)
            if rule is None or rule.WhichOneof("pattern") in (None, "custom"):
                missing.append(f"{name}.{method.name}")
    return missing


# -- building request messages ------------------------------------------------------------


def _field(message_descriptor: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor:
    found = message_descriptor.fields_by_name.get(name)
    if found is None:
        for candidate in message_descriptor.fields:
            if candidate.json_name == name:
                return candidate
        raise RouteError(f"{message_descriptor.name} has no field {name!r}", name)
    return found


def _is_map(fd: descriptor.FieldDescriptor) -> bool:
    return fd.type == _FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _query_value(fd: descriptor.FieldDescriptor, text: str, path: str) -> Any:
    if fd.type == _FD.TYPE_BOOL:
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0", ""):
            return False
        raise RouteError(f"{path} must be true or false, not {text!r}", path)
    if fd.type == _FD.TYPE_MESSAGE and fd.message_type.full_name not in _STRING_MESSAGES:
        raise RouteError(f"{path} is a message: send it in a JSON body", path)
    # Numbers, enums (by name or number), strings, bytes and the well-known string
    # types are given to the JSON parser as strings, which it accepts for all of them.
    return text


def query_dict(
    message_descriptor: descriptor.Descriptor, items: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """Query parameters as a nested dict of proto field names."""
    out: dict[str, Any] = {}
    for key, text in items:
        names = key.split(".")
        current = message_descriptor
        target = out
        path: list[str] = []
        for position, name in enumerate(names):
            fd = _field(current, name)
            path.append(fd.name)
            dotted = ".".join(path)
            last = position == len(names) - 1
            if last:
                if _is_map(fd):
                    raise RouteError(f"{dotted} is a map: send it in a JSON body", dotted)
                value = _query_value(fd, text, dotted)
                if fd.is_repeated:
                    target.setdefault(fd.name, []).append(value)
                elif fd.name in target:
                    raise RouteError(f"{dotted} is given twice", dotted)
                else:
                    target[fd.name] = value
            else:
                if fd.type != _FD.TYPE_MESSAGE or fd.is_repeated:
                    raise RouteError(f"{dotted} has no field {names[position + 1]!r}", dotted)
                if fd.message_type.full_name in _STRING_MESSAGES:
                    raise RouteError(f"{dotted} is one value, not a message", dotted)
                target = target.setdefault(fd.name, {})
                current = fd.message_type
    return out


def set_path_variables(message: Any, variables: Mapping[str, str]) -> None:
    """Put the path variables into the message; a body that says otherwise is refused."""
    for dotted, value in variables.items():
        names = dotted.split(".")
        target = message
        for name in names[:-1]:
            target = getattr(target, name)
        current = getattr(target, names[-1])
        if current and current != value:
            raise RouteError(f"{dotted} in the body differs from the path", dotted)
        setattr(target, names[-1], value)


def build_request(
    route: Route,
    variables: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes,
) -> Any:
    """The request message of ``route`` from the path variables, the query and the body."""
    message = route.request_class()
    if route.body == "*" and body.strip():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RouteError(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RouteError("the body must be a JSON object")
        json_format.ParseDict(data, message)
    items = list(query)
    if items:
        json_format.ParseDict(query_dict(route.method.input_type, items), message)
    set_path_variables(message, variables)
    return message


def parse_message(cls: Any, text: bytes) -> Any:
    """One message of ``cls`` from one JSON object (one NDJSON line)."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RouteError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RouteError("each line must be a JSON object")
    message = cls()
    json_format.ParseDict(data, message)
    return message
