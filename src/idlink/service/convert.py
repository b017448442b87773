"""Protobuf messages <-> domain values.

PIDs are 16 raw bytes inside idlink and UUID strings at the API edge; times
are microseconds inside and ``google.protobuf.Timestamp`` outside. Malformed
input raises :class:`InvalidArgument` naming the field, so that the status
mapping can tell the caller exactly what to fix.

Every converter that can reveal PII (contacts, customers, profile fields,
engagement text, record ids) takes the ``viewer``, the principal the answer is
for, and masks what that role may not see (SPEC 8). They read no ambient
state, so they give the same answer on the event loop and on a pool thread.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from idlink.domain import profiles
from idlink.domain.contacts import ContactKey, check_text
from idlink.domain.engine import MAX_ACCOUNT_BYTES, LinkResult, Preview, RecordInput
from idlink.domain.keytypes import (
    DEFAULT_ISOLATE_MIN_CONNECTIONS,
    DEFAULT_MAX_CONTACTS,
    NORMALIZER_TRIM,
    AccountPolicy,
    KeyType,
)
from idlink.domain.views import ContactView, CustomerView, Explanation, Resolution, Suggestion
from idlink.errors import InvalidArgument
from idlink.security import masking
from idlink.security.roles import READER, Principal
from idlink.service.encoded import Encoded
from idlink.store.txn import ChangeEvent, EngagementState
from idlink.v1 import common_pb2, identity_pb2, profile_pb2

# Timestamps outside these bounds are refused (google.protobuf.Timestamp's own range).
_MIN_SECONDS = -62135596800  # 0001-01-01
_MAX_SECONDS = 253402300799  # 9999-12-31

_CHANGE_KINDS = {
    "created": common_pb2.CHANGE_KIND_CREATED,
    "merged": common_pb2.CHANGE_KIND_MERGED,
    "split": common_pb2.CHANGE_KIND_SPLIT,
    "updated": common_pb2.CHANGE_KIND_UPDATED,
    "erased": common_pb2.CHANGE_KIND_ERASED,
    "policy_changed": common_pb2.CHANGE_KIND_POLICY_CHANGED,
}

FIELD_TYPE_TO_DOMAIN = {
    profile_pb2.FIELD_TYPE_STRING: profiles.STRING,
    profile_pb2.FIELD_TYPE_INT: profiles.INT,
    profile_pb2.FIELD_TYPE_DOUBLE: profiles.DOUBLE,
    profile_pb2.FIELD_TYPE_BOOL: profiles.BOOL,
    profile_pb2.FIELD_TYPE_TIMESTAMP: profiles.TIMESTAMP,
    profile_pb2.FIELD_TYPE_ENUM: profiles.ENUM,
    profile_pb2.FIELD_TYPE_STRING_LIST: profiles.STRING_LIST,
}
FIELD_TYPE_TO_PROTO = {v: k for k, v in FIELD_TYPE_TO_DOMAIN.items()}

_VALUE_KINDS = {
    "string_value": profiles.STRING,
    "int_value": profiles.INT,
    "double_value": profiles.DOUBLE,
    "bool_value": profiles.BOOL,
    "timestamp_value": profiles.TIMESTAMP,
    "enum_value": profiles.ENUM,
    "string_list_value": profiles.STRING_LIST,
}

_CONSENT_TO_DOMAIN = {
    common_pb2.CONSENT_STATUS_OPTED_IN: "opted_in",
    common_pb2.CONSENT_STATUS_OPTED_OUT: "opted_out",
}
_CONSENT_TO_PROTO = {v: k for k, v in _CONSENT_TO_DOMAIN.items()}


# -- scalars ------------------------------------------------------------------------


def enum(value: int) -> Any:
    """A domain status int as a proto enum value: the numbers are the same by design."""
    return value


def pid_str(pid: bytes) -> str:
    """A PID as a UUID string ("" for none).

    ``str(uuid.UUID(bytes=pid))`` (lower-case hex in 8-4-4-4-12 groups), formatted
    from the hex directly; a PID that is not 16 bytes goes through ``uuid`` (which
    refuses it).
    """
    if len(pid) != 16:
        return str(uuid.UUID(bytes=pid)) if pid else ""
    h = pid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def pid_strs(pids: Iterable[bytes]) -> list[str]:
    return [pid_str(p) for p in pids]


def parse_pid(text: str, field: str) -> bytes:
    """A UUID string from a request as 16 raw bytes."""
    if not text:
        raise InvalidArgument(f"{field} is required", field=field)
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        raise InvalidArgument(f"{field} is not a UUID", field=field, reason="BAD_PID") from None


# Account names already checked (every request carries one, mostly the same few).
_CHECKED_ACCOUNTS: set[str] = set()
MAX_CHECKED_ACCOUNTS = 4096


def account(text: str) -> str:
    """Check the account name every request carries."""
    if text in _CHECKED_ACCOUNTS:
        return text
    check_text(text, "account", MAX_ACCOUNT_BYTES)
    if len(_CHECKED_ACCOUNTS) >= MAX_CHECKED_ACCOUNTS:
        _CHECKED_ACCOUNTS.clear()
    _CHECKED_ACCOUNTS.add(text)
    return text


def to_us(ts: Timestamp, field: str) -> int:
    """A Timestamp as microseconds since the epoch."""
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} is not a valid timestamp", field=field)
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def optional_us(message: Any, name: str, field: str, default: int) -> int:
    """A Timestamp field in microseconds, or ``default`` when it is unset."""
    if not message.HasField(name):
        return default
    return to_us(getattr(message, name), field)


def timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def now_us() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)


# -- contacts and records --------------------------------------------------------------


def contact_key(message: common_pb2.ContactKey, field: str) -> ContactKey:
    if not message.type:
        raise InvalidArgument(f"{field}.type is required", field=f"{field}.type")
    return ContactKey(message.type, message.value, message.source)


def required_contact(request: Any, name: str, field: str | None = None) -> ContactKey:
    field = field or name
    if not request.HasField(name):
        raise InvalidArgument(f"{field} is required", field=field)
    return contact_key(getattr(request, name), field)


def contact_keys(messages: Sequence[common_pb2.ContactKey], field: str) -> list[ContactKey]:
    keys = [ContactKey(m.type, m.value, m.source) for m in messages]
    for i, key in enumerate(keys):
        if not key.type:  # the element's name is worked out only for the refusal
            contact_key(messages[i], f"{field}[{i}]")
    return keys


def record_input(message: Any, field: str, now: int) -> RecordInput:
    """A LinkRequest or a Record as a domain record (the engine checks the limits)."""
    prefix = f"{field}." if field else ""
    return RecordInput(
        source=message.source,
        record_id=message.record_id,
        contacts=contact_keys(message.contacts, f"{prefix}contacts"),
        observed_at_us=optional_us(message, "observed_at", f"{prefix}observed_at", now),
        deleted=bool(getattr(message, "deleted", False)),
    )


# -- customers ----------------------------------------------------------------------------


def contact(view: ContactView, viewer: Principal) -> common_pb2.Contact:
    """A contact as ``viewer`` may see it: its value masked for roles without PII (SPEC 8)."""
    value = view.value if viewer.sees_pii else masking.mask_contact(view.type, view.value)
    return common_pb2.Contact(
        contact_pid=pid_str(view.pid),
        type=view.type,
        value=value,
        source=view.source,
        linkable=view.linkable,
        reason=view.reason,
        connections=view.connections,
    )


def attribute_value(value: profiles.Value) -> common_pb2.AttributeValue:
    kind, data = value
    out = common_pb2.AttributeValue()
    if kind == profiles.STRING:
        out.string_value = data
    elif kind == profiles.INT:
        out.int_value = data
    elif kind == profiles.DOUBLE:
        out.double_value = data
    elif kind == profiles.BOOL:
        out.bool_value = data
    elif kind == profiles.TIMESTAMP:
        out.timestamp_value.CopyFrom(timestamp(data))
    elif kind == profiles.ENUM:
        out.enum_value = data
    elif kind == profiles.STRING_LIST:
        out.string_list_value.values.extend(data)
    return out


def domain_value(message: common_pb2.AttributeValue, field: str) -> profiles.Value:
    which = message.WhichOneof("kind")
    if which is None:
        return "", None
    kind = _VALUE_KINDS[which]
    if kind == profiles.TIMESTAMP:
        return kind, to_us(message.timestamp_value, field)
    if kind == profiles.STRING_LIST:
        return kind, list(message.string_list_value.values)
    return kind, getattr(message, which)


def preferences(prefs: dict[str, Any]) -> common_pb2.ContactPreferences:
    out = common_pb2.ContactPreferences(
        preferred_channel=prefs.get("preferred_channel", ""),
        preferred_contact_pid=prefs.get("preferred_contact_pid", ""),
        preferred_agent=prefs.get("preferred_agent", ""),
        time_zone=prefs.get("time_zone", ""),
        language=prefs.get("language", ""),
    )
    for window in prefs.get("best_times", ()):
        out.best_times.add(days=window.get("days", []), start=window["start"], end=window["end"])
    for consent in prefs.get("consents", ()):
        item = out.consents.add(
            channel=consent["channel"],
            status=_CONSENT_TO_PROTO.get(consent["status"], common_pb2.CONSENT_STATUS_UNSPECIFIED),
        )
        if consent.get("updated_at_us"):
            item.update_time.CopyFrom(timestamp(consent["updated_at_us"]))
    return out


def domain_preferences(message: common_pb2.ContactPreferences) -> dict[str, Any]:
    consents = []
    for i, consent in enumerate(message.consents):
        item: dict[str, Any] = {
            "channel": consent.channel,
            "status": _CONSENT_TO_DOMAIN.get(consent.status, ""),
        }
        if consent.HasField("update_time"):
            item["updated_at_us"] = to_us(
                consent.update_time, f"preferences.consents[{i}].update_time"
            )
        consents.append(item)
    return {
        "preferred_channel": message.preferred_channel,
        "preferred_contact_pid": message.preferred_contact_pid,
        "preferred_agent": message.preferred_agent,
        "best_times": [
            {"days": list(w.days), "start": w.start, "end": w.end} for w in message.best_times
        ],
        "time_zone": message.time_zone,
        "language": message.language,
        "consents": consents,
    }


def customer(view: CustomerView, viewer: Principal) -> common_pb2.Customer:
    """A customer as ``viewer`` may see it: contacts and PII profile fields masked."""
    out = common_pb2.Customer(
        customer_pid=pid_str(view.pid),
        contacts=[contact(c, viewer) for c in view.contacts],
        anonymous=view.anonymous,
        redirected_from=pid_str(view.redirected_from),
        labels=list(view.profile.labels),
        split_from=pid_str(view.split_from),
    )
    for name, value in profiles.decode_attributes(view.profile.attributes).items():
        shown = _masked_value(value) if _hides_field(viewer, name) else value
        if shown is not None:
            out.attributes[name].CopyFrom(attribute_value(shown))
    prefs = profiles.decode_preferences(view.profile.preferences)
    if prefs:
        out.preferences.CopyFrom(preferences(prefs))
    if view.created_at_us:
        out.create_time.CopyFrom(timestamp(view.created_at_us))
    return out


def _hides_field(viewer: Principal, name: str) -> bool:
    """Whether ``viewer`` sees profile field ``name`` masked.

    Roles without PII access see the schema's PII fields masked (the auth
    interceptor puts their names in the principal); a viewer with no role, a
    call nobody admitted, sees every field masked.
    """
    if viewer.sees_pii:
        return False
    return viewer.role < READER or name in viewer.pii_fields


def _masked_value(value: profiles.Value) -> profiles.Value | None:
    """A PII attribute as a role without PII access sees it (None: left out)."""
    kind, data = value
    if kind == profiles.STRING:
        return kind, masking.mask_text(data)
    if kind == profiles.STRING_LIST:
        return kind, [masking.mask_text(item) for item in data]
    return None


# A suggestion reason that names the stored phone number holding a national number (SPEC 5.2).
_NATIONAL_REASON = "NATIONAL_NUMBER: "


def suggestion(s: Suggestion, viewer: Principal) -> common_pb2.Suggestion:
    """A suggestion as ``viewer`` may see it: a number its reason names masked like a contact."""
    reason = s.reason
    if not viewer.sees_pii and reason.startswith(_NATIONAL_REASON):
        number = reason[len(_NATIONAL_REASON) :]
        reason = _NATIONAL_REASON + masking.mask_contact("phone", number)
    return common_pb2.Suggestion(customer_pid=pid_str(s.customer_pid), reason=reason, score=s.score)


def resolution(answer: Resolution, viewer: Principal) -> identity_pb2.ResolveResponse:
    out = identity_pb2.ResolveResponse(
        status=enum(answer.status),
        contact_pid=pid_str(answer.contact_pid),
        suggestions=[suggestion(s, viewer) for s in answer.suggestions],
        reason=answer.reason,
    )
    if answer.customer is not None:
        out.customer.CopyFrom(customer(answer.customer, viewer))
    return out


# Converted answers of the serving cache's resolves, by the answer and what the
# viewer may see: the cache hands out the same Resolution object while it holds
# (docs/serving.md), so its conversion for one kind of viewer is done once.
_RESOLUTIONS: dict[tuple[int, Any], tuple[Resolution, identity_pb2.ResolveResponse]] = {}
MAX_CONVERTED = 65_536


class _Kept:
    """What is kept beside a kept response (by the response itself, in ``_SHOWN``).

    ``shown``: the customers it shows, what ``auth.customer_pids`` reads from
    it (the customer, then each suggestion), taken from the answer's raw PIDs
    instead of parsing its UUID strings again. ``batch_item``: its encoding as
    one item of a BatchResolveResponse, worked out at its first batch.
    """

    __slots__ = ("response", "shown", "batch_item")

    def __init__(self, response: identity_pb2.ResolveResponse, shown: tuple[bytes, ...]) -> None:
        self.response = response
        self.shown = shown
        self.batch_item: bytes | None = None


_SHOWN: dict[int, _Kept] = {}


def _mask_class(viewer: Principal) -> Any:
    """What decides masking (``contact``, ``_hides_field``, ``suggestion``) for ``viewer``."""
    if viewer.sees_pii:
        return True
    return (viewer.role >= READER, viewer.pii_fields)


def shared_resolution(answer: Resolution, viewer: Principal) -> identity_pb2.ResolveResponse:
    """:func:`resolution`, kept for the same answer object and mask: never change the result.

    The message returned is shared by every call that gets the same answer
    for the same kind of viewer; gRPC only serializes it.
    """
    return _shared_resolution(answer, viewer, _mask_class(viewer))


def shared_resolutions(
    answers: Sequence[Resolution], viewer: Principal
) -> list[identity_pb2.ResolveResponse]:
    """:func:`shared_resolution` of each answer (a batch: the viewer's mask worked out once)."""
    mask = _mask_class(viewer)
    return [_shared_resolution(answer, viewer, mask) for answer in answers]


def _shared_resolution(
    answer: Resolution, viewer: Principal, mask: Any
) -> identity_pb2.ResolveResponse:
    key = (id(answer), mask)
    found = _RESOLUTIONS.get(key)
    if found is not None and found[0] is answer:
        return found[1]
    response = resolution(answer, viewer)
    if len(_RESOLUTIONS) >= MAX_CONVERTED:
        for old in list(itertools.islice(_RESOLUTIONS, MAX_CONVERTED // 4)):
            gone = _RESOLUTIONS.pop(old, None)
            if gone is not None:
                _SHOWN.pop(id(gone[1]), None)
    # The entry holds the answer itself, so its id is not reused while it is kept.
    _RESOLUTIONS[key] = (answer, response)
    shown = [answer.customer.pid] if answer.customer is not None else []
    shown.extend(s.customer_pid for s in answer.suggestions)
    _SHOWN[id(response)] = _Kept(response, tuple(pid for pid in shown if pid))
    return response


def batch_resolution(
    responses: list[identity_pb2.ResolveResponse],
) -> identity_pb2.BatchResolveResponse | Encoded:
    """A BatchResolveResponse of responses made by :func:`shared_resolution`.

    When every response is a kept one, the batch is sent as the concatenation
    of their kept encodings (``service/encoded.py``), with the customers it
    shows in the order ``auth.customer_pids`` reads them, from the responses'
    kept PIDs; otherwise it is built as a message.
    """
    shown: list[bytes] = []
    items: list[bytes] = []
    for response in responses:
        kept = _kept(response)
        if kept is None:  # not a kept response: the interceptor reads the message itself
            return identity_pb2.BatchResolveResponse(responses=responses)
        shown.extend(kept.shown)
        if kept.batch_item is None:
            # A batch of this one response is exactly its tag, its length and its bytes.
            one = identity_pb2.BatchResolveResponse(responses=[response])
            kept.batch_item = one.SerializeToString()
        items.append(kept.batch_item)
    return Encoded(b"".join(items), identity_pb2.BatchResolveResponse, tuple(shown))


def shown_pids(message: Any) -> tuple[bytes, ...] | None:
    """The customer PIDs a kept response or an encoded batch shows (None: neither)."""
    if type(message) is Encoded:
        return message.shown
    kept = _kept(message)
    return None if kept is None else kept.shown


def _kept(message: Any) -> _Kept | None:
    found = _SHOWN.get(id(message))
    return found if found is not None and found.response is message else None


def change_event(event: ChangeEvent) -> common_pb2.ChangeEvent:
    return common_pb2.ChangeEvent(
        seq=event.seq,
        kind=_CHANGE_KINDS.get(event.kind, common_pb2.CHANGE_KIND_UNSPECIFIED),
        customer_pid=pid_str(event.customer_pid),
        other_customer_pids=pid_strs(event.other_customer_pids),
        contacts_added=pid_strs(event.contacts_added),
        contacts_removed=pid_strs(event.contacts_removed),
        actor=event.actor,
        time=timestamp(event.at_us),
        detail=event.detail,
    )


def record_id(value: str, viewer: Principal) -> str:
    """A stored record id as ``viewer`` may see it: a source may make one of a phone number."""
    return value if viewer.sees_pii else masking.mask_record_id(value)


# Explain reasons that name a record as "<source>/<record id>".
_RECORD_REASONS = ("CAPPED: record ", "CONFLICT: record ")


def _reason(text: str, viewer: Principal) -> str:
    """An explain reason with the record id it names masked for roles without PII.

    The record is named ``<source>/<record id>``; everything after the first
    ``/`` is masked, so the whole record id is hidden even if it holds a ``/``.
    """
    if viewer.sees_pii:
        return text
    for head in _RECORD_REASONS:
        if text.startswith(head):
            source, sep, rest = text[len(head) :].partition("/")
            if not sep:
                return head + masking.mask_record_id(source)
            return f"{head}{source}/{masking.mask_record_id(rest)}"
    return text


def explanation(result: Explanation, viewer: Principal) -> identity_pb2.ExplainLinkResponse:
    """An explanation as ``viewer`` may see it: record ids masked for roles without PII."""
    return identity_pb2.ExplainLinkResponse(
        linked=result.linked,
        customer_pid=pid_str(result.customer_pid),
        hops=[
            identity_pb2.LinkHop(
                source=h.source,
                record_id=record_id(h.record_id, viewer),
                observed_at=timestamp(h.observed_at_us),
                from_contact_pid=pid_str(h.from_contact),
                to_contact_pid=pid_str(h.to_contact),
            )
            for h in result.hops
        ],
        reasons=[_reason(r, viewer) for r in result.reasons],
    )


def link_outcome(result: LinkResult) -> tuple[Any, list[str]]:
    return enum(result.outcome), pid_strs(result.conflict_customer_pids)


def preview(result: Preview) -> identity_pb2.PreviewConfigChangeResponse:
    return identity_pb2.PreviewConfigChangeResponse(
        merges=result.merges,
        splits=result.splits,
        merge_examples=[
            identity_pb2.MergeExample(customer_pids=pid_strs(example))
            for example in result.merge_examples
        ],
        split_customer_pids=pid_strs(result.split_examples),
    )


# -- engagements ---------------------------------------------------------------------------


def engagement(state: EngagementState, viewer: Principal) -> profile_pb2.Engagement:
    """An engagement as ``viewer`` may see it: free text may name anyone, so it is masked."""
    summary, attributes = state.summary, dict(state.attributes)
    if not viewer.sees_pii:
        summary = masking.mask_text(summary)
        attributes = {k: masking.mask_text(v) for k, v in attributes.items()}
    return profile_pb2.Engagement(
        engagement_id=pid_str(state.engagement_id),
        contact_pid=pid_str(state.contact_pid),
        occurred_at=timestamp(state.occurred_at_us),
        channel=state.channel,
        direction=state.direction,
        summary=summary,
        attributes=attributes,
        pinned_customer_pid=pid_str(state.pinned_customer_pid),
        record_time=timestamp(state.recorded_at_us),
    )


# -- configuration ---------------------------------------------------------------------------


def key_type(message: common_pb2.KeyType) -> KeyType:
    return KeyType(
        name=message.name,
        normalizer=message.normalizer or NORMALIZER_TRIM,
        source_scoped=message.source_scoped,
        max_per_customer=message.max_per_customer,
        reassignable=message.reassignable,
        anonymous=message.anonymous,
        blocked_values=tuple(message.blocked_values),
        blocked_patterns=tuple(message.blocked_patterns),
        priority=message.priority,  # 0: the type's default rank (SPEC 3.8)
    )


def key_type_message(value: KeyType) -> common_pb2.KeyType:
    return common_pb2.KeyType(
        name=value.name,
        normalizer=enum(value.normalizer),
        source_scoped=value.source_scoped,
        max_per_customer=value.max_per_customer,
        reassignable=value.reassignable,
        anonymous=value.anonymous,
        blocked_values=list(value.blocked_values),
        blocked_patterns=list(value.blocked_patterns),
        priority=value.priority,
    )


def account_policy(message: common_pb2.AccountPolicy) -> AccountPolicy:
    """0 in a field means its default (SPEC 10)."""
    return AccountPolicy(
        max_contacts=message.max_contacts or DEFAULT_MAX_CONTACTS,
        isolate_min_connections=message.isolate_min_connections or DEFAULT_ISOLATE_MIN_CONNECTIONS,
    )


def account_policy_message(value: AccountPolicy) -> common_pb2.AccountPolicy:
    return common_pb2.AccountPolicy(
        max_contacts=value.max_contacts, isolate_min_connections=value.isolate_min_connections
    )


def schema_field(message: profile_pb2.SchemaField) -> profiles.FieldSpec:
    return profiles.FieldSpec(
        name=message.name,
        type=FIELD_TYPE_TO_DOMAIN.get(message.type, ""),
        required=message.required,
        pii=message.pii,
        description=message.description,
        enum_values=tuple(message.enum_values),
    )


def schema(account_name: str, value: profiles.Schema) -> profile_pb2.Schema:
    out = profile_pb2.Schema(account=account_name, version=value.version)
    for spec in value.ordered():
        out.fields.add(
            name=spec.name,
            type=FIELD_TYPE_TO_PROTO[spec.type],
            required=spec.required,
            pii=spec.pii,
            description=spec.description,
            enum_values=list(spec.enum_values),
            system=spec.system,
        )
    if value.updated_at_us:
        out.update_time.CopyFrom(timestamp(value.updated_at_us))
    return out
