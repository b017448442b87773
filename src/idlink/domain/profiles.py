"""Customer profiles: the per-account schema, typed attributes, labels, preferences (SPEC 4).

Storage
-------
- The schema of an account is JSON in the meta sub-database under
  the account's schema key (``AccountTxn.get_schema``)::

      {"version": 3, "updated_at_us": 1700000000000000,
       "fields": [{"name": "tier", "type": "enum", "required": false, "pii": false,
                   "description": "...", "enum_values": ["gold", "silver"]}, ...]}

  An account without a stored schema has the system fields only.
- An attribute value is stored in ``CustomerState.profile.attributes[name]`` as
  UTF-8 JSON of a one-key object naming its type, so a value can be read back
  without the schema (and survives a later schema change unchanged)::

      {"string": "Jana"}  {"int": 42}  {"double": 1.5}  {"bool": true}
      {"timestamp": 1700000000000000}   (microseconds since the Unix epoch)
      {"enum": "gold"}    {"string_list": ["a", "b"]}

- Preferences are UTF-8 JSON in ``profile.preferences`` with the keys of
  :data:`PREFERENCE_KEYS` (see :func:`validate_preferences`).

Rules
-----
- Writing a field that is not in the schema, or a value of another type, is
  ``InvalidArgument`` naming the field (``attributes.<name>``).
- ``first_name`` and ``phone_number`` are system fields: always present, of type
  string, and they cannot be removed or change type.
- ``required`` is checked when a customer's attributes are written: the result
  must hold every required field. Customers that were never edited (created by
  linking) are not touched by a schema change.
- Removing a field keeps the values customers hold (they are still returned);
  new values for it are refused. Changing a field's type is refused
  (``FailedPrecondition``): remove it and add it again under another name.
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idlink.domain.contacts import check_text
from idlink.domain.pids import follow_redirects
from idlink.domain.reads import AccountView
from idlink.domain.unit import AccountUnit
from idlink.domain.views import CustomerView
from idlink.errors import FailedPrecondition, InvalidArgument, NotFound
from idlink.store.txn import AccountTxn

if TYPE_CHECKING:
    from idlink.domain.engine import IdentityEngine

STRING = "string"
INT = "int"
DOUBLE = "double"
BOOL = "bool"
TIMESTAMP = "timestamp"
ENUM = "enum"
STRING_LIST = "string_list"
FIELD_TYPES = (STRING, INT, DOUBLE, BOOL, TIMESTAMP, ENUM, STRING_LIST)

MAX_FIELDS = 200
MAX_STRING_BYTES = 4096
MAX_LIST_ITEMS = 100
MAX_LIST_ITEM_BYTES = 256
MAX_ENUM_VALUES = 256
MAX_DESCRIPTION_CHARS = 1024
MAX_LABELS = 100
MAX_LABEL_BYTES = 64
MAX_PREFERENCES_BYTES = 16384
_INT64 = (-(1 << 63), (1 << 63) - 1)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a profile schema."""

    name: str
    type: str
    required: bool = False
    pii: bool = False
    description: str = ""
    enum_values: tuple[str, ...] = ()
    system: bool = False


SYSTEM_FIELDS: dict[str, FieldSpec] = {
    "first_name": FieldSpec("first_name", STRING, pii=True, description="Given name", system=True),
    "phone_number": FieldSpec(
        "phone_number", STRING, pii=True, description="Phone number to show agents", system=True
    ),
}


@dataclass(slots=True)
class Schema:
    """The profile schema of one account."""

    fields: dict[str, FieldSpec] = field(default_factory=lambda: dict(SYSTEM_FIELDS))
    version: int = 0
    updated_at_us: int = 0

    def ordered(self) -> list[FieldSpec]:
        """System fields first, then by name."""
        return sorted(self.fields.values(), key=lambda f: (not f.system, f.name))


# A typed attribute value: (type, value). Timestamps are microseconds since the epoch.
Value = tuple[str, Any]


@dataclass(slots=True)
class ProfileUpdate:
    """What an update changes; ``None`` leaves a part as it is."""

    replace_attributes: bool = False  # drop every attribute not in set_attributes
    set_attributes: dict[str, Value] = field(default_factory=dict)
    clear_attributes: set[str] = field(default_factory=set)
    labels: list[str] | None = None
    add_labels: list[str] = field(default_factory=list)
    remove_labels: list[str] = field(default_factory=list)
    preferences: dict[str, Any] | None = None


# -- schema -------------------------------------------------------------------------


# Parsed schemas by their stored JSON: a schema is a function of its bytes, so the
# bytes are the exact key (callers below agent have it read on every call).
_PARSED: dict[bytes, Schema] = {}
_PARSED_LIMIT = 1024


def load_schema(txn: AccountTxn | None) -> Schema:
    """The stored schema of an account (system fields only when none is stored)."""
    raw = txn.get_schema() if txn is not None else None
    if raw is None:
        return Schema()
    parsed = _PARSED.get(raw)
    if parsed is None:
        parsed = _parse_schema(raw)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[raw] = parsed
    # A copy: callers may change the schema they get (an update builds on it).
    return Schema(dict(parsed.fields), parsed.version, parsed.updated_at_us)


def _parse_schema(raw: bytes) -> Schema:
    data = json.loads(raw)
    fields = {
        f["name"]: FieldSpec(
            f["name"],
            f["type"],
            bool(f.get("required", False)),
            bool(f.get("pii", False)),
            f.get("description", ""),
            tuple(f.get("enum_values", ())),
            f["name"] in SYSTEM_FIELDS,
        )
        for f in data["fields"]
    }
    return Schema(fields, int(data.get("version", 0)), int(data.get("updated_at_us", 0)))


def _dump_schema(schema: Schema) -> bytes:
    return json.dumps(
        {
            "version": schema.version,
            "updated_at_us": schema.updated_at_us,
            "fields": [
                {
                    "name": f.name,
                    "type": f.type,
                    "required": f.required,
                    "pii": f.pii,
                    "description": f.description,
                    "enum_values": list(f.enum_values),
                }
                for f in schema.ordered()
            ],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def get_schema(engine: IdentityEngine, account: str) -> Schema:
    """The schema of an account."""
    with engine.read(account) as view:
        return load_schema(view.txn)


def validate_field(spec: FieldSpec, where: str) -> FieldSpec:
    """Check one field definition; ``where`` names it in errors (``schema.fields[2]``)."""
    if not _NAME.match(spec.name):
        raise InvalidArgument(
            f"{where}.name must be 1-64 characters of a-z, 0-9 and _, starting with a letter",
            field=f"{where}.name",
        )
    if spec.type not in FIELD_TYPES:
        raise InvalidArgument(f"{where}.type is required", field=f"{where}.type")
    if len(spec.description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(
            f"{where}.description is longer than {MAX_DESCRIPTION_CHARS} characters",
            field=f"{where}.description",
        )
    if spec.type == ENUM:
        if not spec.enum_values:
            raise InvalidArgument(
                f"{where}.enum_values must list the values of an enum field",
                field=f"{where}.enum_values",
            )
        if len(spec.enum_values) > MAX_ENUM_VALUES or len(set(spec.enum_values)) != len(
            spec.enum_values
        ):
            raise InvalidArgument(
                f"{where}.enum_values must be at most {MAX_ENUM_VALUES} distinct values",
                field=f"{where}.enum_values",
            )
        for value in spec.enum_values:
            check_text(value, f"{where}.enum_values", MAX_LIST_ITEM_BYTES)
    elif spec.enum_values:
        raise InvalidArgument(
            f"{where}.enum_values is only for enum fields", field=f"{where}.enum_values"
        )
    system = SYSTEM_FIELDS.get(spec.name)
    if system is not None and spec.type != system.type:
        raise InvalidArgument(
            f"{spec.name} is a system field of type {system.type}; its type cannot change",
            field=f"{where}.type",
            reason="SYSTEM_FIELD",
        )
    return FieldSpec(
        spec.name,
        spec.type,
        spec.required,
        spec.pii,
        spec.description,
        tuple(spec.enum_values),
        system is not None,
    )


def update_schema(
    engine: IdentityEngine,
    account: str,
    *,
    put: Sequence[tuple[str, FieldSpec]] = (),
    remove: Iterable[str] = (),
    replace: bool = False,
    field_prefix: str = "schema.fields",
) -> Schema:
    """Add or replace fields, remove fields, or (``replace``) set the whole list.

    ``put`` pairs each field with where the request holds it (``schema.fields[2]``),
    so that errors name it.
    """
    checked = [(where, validate_field(spec, where)) for where, spec in put]
    names = [spec.name for _, spec in checked]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"{field_prefix} names a field twice", field=field_prefix)
    removed = set(remove)
    for name in sorted(removed):
        if name in SYSTEM_FIELDS:
            raise InvalidArgument(
                f"{name} is a system field and cannot be removed",
                field=f"{field_prefix}.{name}",
                reason="SYSTEM_FIELD",
            )

    def run(unit: AccountUnit) -> Schema:
        txn = unit.txn
        current = load_schema(txn)
        fields = {} if replace else dict(current.fields)
        for name in removed:
            fields.pop(name, None)
        for where, spec in checked:
            old = current.fields.get(spec.name)
            if old is not None and old.type != spec.type:
                raise FailedPrecondition(
                    f"field {spec.name} is of type {old.type}; a type cannot change",
                    field=f"{where}.type",
                    reason="FIELD_TYPE_CHANGE",
                )
            fields[spec.name] = spec
        for name in SYSTEM_FIELDS:
            if name not in fields:
                raise InvalidArgument(
                    f"{name} is a system field and cannot be removed",
                    field=f"{field_prefix}.{name}",
                    reason="SYSTEM_FIELD",
                )
        if len(fields) > MAX_FIELDS:
            raise InvalidArgument(f"a schema has at most {MAX_FIELDS} fields", field=field_prefix)
        if fields == current.fields:
            return current
        updated = Schema(fields, current.version + 1, unit.now)
        txn.put_schema(_dump_schema(updated))
        return updated

    return engine.write(account, "", run)


# -- attribute values ------------------------------------------------------------------


def check_value(spec: FieldSpec, value: Value, where: str) -> Value:
    """Check one attribute value against its field; return it in stored form."""
    kind, data = value
    if kind != spec.type:
        raise InvalidArgument(
            f"{where} is of type {spec.type}, not {kind or 'empty'}",
            field=where,
            reason="WRONG_TYPE",
        )
    if kind in (STRING, ENUM):
        if (
            not isinstance(data, str)
            or len(data.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES
        ):
            raise InvalidArgument(f"{where} is longer than {MAX_STRING_BYTES} bytes", field=where)
        _check_utf8(data, where)
        if kind == ENUM and data not in spec.enum_values:
            raise InvalidArgument(
                f"{where} must be one of {', '.join(spec.enum_values)}",
                field=where,
                reason="WRONG_TYPE",
            )
    elif kind in (INT, TIMESTAMP):
        if (
            isinstance(data, bool)
            or not isinstance(data, int)
            or not _INT64[0] <= data <= _INT64[1]
        ):
            raise InvalidArgument(f"{where} is out of range", field=where)
    elif kind == DOUBLE:
        if not isinstance(data, float | int) or not math.isfinite(data):
            raise InvalidArgument(f"{where} must be a finite number", field=where)
        data = float(data)
    elif kind == BOOL:
        data = bool(data)
    elif kind == STRING_LIST:
        items = list(data)
        if len(items) > MAX_LIST_ITEMS:
            raise InvalidArgument(f"{where} has more than {MAX_LIST_ITEMS} items", field=where)
        for item in items:
            if len(item.encode("utf-8", "surrogatepass")) > MAX_LIST_ITEM_BYTES:
                raise InvalidArgument(
                    f"{where} has an item longer than {MAX_LIST_ITEM_BYTES} bytes", field=where
                )
            _check_utf8(item, where)
        data = items
    return kind, data


def _check_utf8(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{where} is not valid UTF-8 text", field=where) from None


def encode_value(value: Value) -> bytes:
    """The stored bytes of a checked value (see the module docstring)."""
    kind, data = value
    return json.dumps({kind: data}, separators=(",", ":"), ensure_ascii=False).encode()


def decode_value(raw: bytes) -> Value:
    """A stored value back as (type, value)."""
    data = json.loads(raw)
    ((kind, value),) = data.items()
    return kind, value


def decode_attributes(attributes: Mapping[str, bytes]) -> dict[str, Value]:
    """Every stored attribute of a profile, decoded; unreadable values are skipped."""
    out: dict[str, Value] = {}
    for name, raw in attributes.items():
        try:
            out[name] = decode_value(raw)
        except (ValueError, TypeError):
            continue
    return out


# -- labels and preferences ---------------------------------------------------------------


def check_label(label: str, where: str) -> str:
    check_text(label.strip(), where, MAX_LABEL_BYTES)
    return label.strip()


PREFERENCE_KEYS = (
    "preferred_channel",
    "preferred_contact_pid",
    "preferred_agent",
    "best_times",  # [{"days": [1..7], "start": "HH:MM", "end": "HH:MM"}]
    "time_zone",
    "language",
    "consents",  # [{"channel": str, "status": "opted_in" | "opted_out", "updated_at_us": int}]
)
CONSENT_STATUSES = ("opted_in", "opted_out")


def validate_preferences(prefs: Mapping[str, Any], contact_pids: Iterable[bytes]) -> dict[str, Any]:
    """Check contact preferences; the outbound identity must be one of the customer's contacts."""
    out: dict[str, Any] = {}
    for key in ("preferred_channel", "preferred_agent"):
        if prefs.get(key):
            check_text(prefs[key], f"preferences.{key}", 128)
            out[key] = prefs[key]
    pid = prefs.get("preferred_contact_pid")
    if pid:
        try:
            raw = uuid.UUID(pid).bytes
        except ValueError:
            raise InvalidArgument(
                "preferences.preferred_contact_pid is not a contact PID",
                field="preferences.preferred_contact_pid",
            ) from None
        if raw not in set(contact_pids):
            raise InvalidArgument(
                "preferences.preferred_contact_pid is not a contact of this customer",
                field="preferences.preferred_contact_pid",
            )
        out["preferred_contact_pid"] = str(uuid.UUID(bytes=raw))
    zone = prefs.get("time_zone") or ""
    if zone:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(
                f"preferences.time_zone {zone!r} is not an IANA time zone",
                field="preferences.time_zone",
            ) from None
        out["time_zone"] = zone
    windows = []
    for i, window in enumerate(prefs.get("best_times") or ()):
        where = f"preferences.best_times[{i}]"
        days = sorted(set(window.get("days") or ()))
        if any(not 1 <= d <= 7 for d in days):
            raise InvalidArgument(f"{where}.days must be weekdays", field=f"{where}.days")
        start, end = window.get("start", ""), window.get("end", "")
        for name, text in (("start", start), ("end", end)):
            if not _HHMM.match(text):
                raise InvalidArgument(f"{where}.{name} must be HH:MM", field=f"{where}.{name}")
        if end <= start:
            raise InvalidArgument(f"{where}.end must be after start", field=f"{where}.end")
        windows.append({"days": days, "start": start, "end": end})
    if windows:
        if not zone:
            raise InvalidArgument(
                "preferences.time_zone is required with best_times", field="preferences.time_zone"
            )
        out["best_times"] = windows
    language = prefs.get("language") or ""
    if language:
        if not _LANGUAGE.match(language):
            raise InvalidArgument(
                "preferences.language is not a language tag", field="preferences.language"
            )
        out["language"] = language
    consents = []
    seen: set[str] = set()
    for i, consent in enumerate(prefs.get("consents") or ()):
        where = f"preferences.consents[{i}]"
        channel = consent.get("channel", "")
        check_text(channel, f"{where}.channel", 64)
        if channel in seen:
            raise InvalidArgument(f"{where}.channel is named twice", field=f"{where}.channel")
        seen.add(channel)
        if consent.get("status") not in CONSENT_STATUSES:
            raise InvalidArgument(f"{where}.status is required", field=f"{where}.status")
        item = {"channel": channel, "status": consent["status"]}
        if consent.get("updated_at_us"):
            item["updated_at_us"] = int(consent["updated_at_us"])
        consents.append(item)
    if consents:
        out["consents"] = consents
    return out


def encode_preferences(prefs: Mapping[str, Any]) -> bytes:
    if not prefs:
        return b""
    raw = json.dumps(prefs, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    if len(raw) > MAX_PREFERENCES_BYTES:
        raise InvalidArgument(
            f"preferences are larger than {MAX_PREFERENCES_BYTES} bytes", field="preferences"
        )
    return raw


def decode_preferences(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# -- updating a customer -------------------------------------------------------------------


def update_customer(
    engine: IdentityEngine,
    account: str,
    customer_pid: bytes,
    update: ProfileUpdate,
    actor: str = "",
) -> CustomerView:
    """Apply a profile update to a customer (following redirects) in one write.

    The change is put on the change feed as ``updated``; nothing is written
    when the update changes nothing.
    """
    labels = [check_label(x, f"labels[{i}]") for i, x in enumerate(update.labels or ())]
    added = [check_label(x, f"add_labels[{i}]") for i, x in enumerate(update.add_labels)]
    removed = {x.strip() for x in update.remove_labels}

    def run(unit: AccountUnit) -> CustomerView:
        txn = unit.txn
        current, _ = follow_redirects(txn, customer_pid)
        state = txn.get_customer(current)
        if state is None:
            raise NotFound("customer not found", field="customer.customer_pid")
        schema = load_schema(txn)
        profile = state.profile
        changed: list[str] = []

        attributes_touched = (
            update.replace_attributes or update.set_attributes or update.clear_attributes
        )
        if attributes_touched:
            new_attributes = {} if update.replace_attributes else dict(profile.attributes)
            for name in sorted(update.clear_attributes):
                new_attributes.pop(name, None)
            for name, value in sorted(update.set_attributes.items()):
                where = f"attributes.{name}"
                spec = schema.fields.get(name)
                if spec is None:
                    raise InvalidArgument(
                        f"{where} is not a field of the schema", field=where, reason="UNKNOWN_FIELD"
                    )
                new_attributes[name] = encode_value(check_value(spec, value, where))
            for spec in schema.ordered():
                if spec.required and spec.name not in new_attributes:
                    raise InvalidArgument(
                        f"attributes.{spec.name} is required",
                        field=f"attributes.{spec.name}",
                        reason="REQUIRED_FIELD",
                    )
            if new_attributes != dict(profile.attributes):
                profile.attributes.clear()
                profile.attributes.update(new_attributes)
                changed.append("attributes")

        if update.labels is not None or added or removed:
            new_labels = (
                list(dict.fromkeys(labels)) if update.labels is not None else list(profile.labels)
            )
            for label in added:
                if label not in new_labels:
                    new_labels.append(label)
            new_labels = [x for x in new_labels if x not in removed]
            if len(new_labels) > MAX_LABELS:
                raise InvalidArgument(f"a customer has at most {MAX_LABELS} labels", field="labels")
            if new_labels != list(profile.labels):
                del profile.labels[:]
                profile.labels.extend(new_labels)
                changed.append("labels")

        if update.preferences is not None:
            prefs = validate_preferences(update.preferences, state.contact_pids)
            raw = encode_preferences(prefs)
            if raw != profile.preferences:
                profile.preferences = raw
                changed.append("preferences")

        if changed:
            state.updated_at_us = unit.now
            txn.put_customer(current, state)
            unit.emit("updated", current, detail="profile: " + ", ".join(changed))
        return AccountView(txn, unit.config).customer(customer_pid)

    return engine.write(account, actor, run, create=False)
