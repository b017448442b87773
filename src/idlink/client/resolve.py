"""``idlink resolve``: look one contact up from the shell and print the answer.

Exit status: 0 when the contact is found or created (also when it is not
linkable: it still has its own customer), 3 when it is not found, 2 when the
contact is invalid or the request malformed, 1 when the server cannot be
reached or refuses the call.
"""

from __future__ import annotations

import sys

import grpc

from idlink.client.client import IdlinkClient, IdlinkError
from idlink.v1 import common_pb2, identity_pb2

EXIT_FOUND = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3

_EXIT_BY_STATUS = {
    identity_pb2.RESOLVE_STATUS_FOUND: EXIT_FOUND,
    identity_pb2.RESOLVE_STATUS_CREATED: EXIT_FOUND,
    identity_pb2.RESOLVE_STATUS_NOT_LINKABLE: EXIT_FOUND,
    identity_pb2.RESOLVE_STATUS_NOT_FOUND: EXIT_NOT_FOUND,
    identity_pb2.RESOLVE_STATUS_INVALID: EXIT_INVALID,
}


def status_name(status: int) -> str:
    """``FOUND`` for ``RESOLVE_STATUS_FOUND``."""
    return identity_pb2.ResolveStatus.Name(status).removeprefix("RESOLVE_STATUS_")


def _contact_line(contact: common_pb2.Contact) -> str:
    value = f"{contact.value} ({contact.source})" if contact.source else contact.value
    note = "" if contact.linkable else f"  not linkable: {contact.reason or 'yes'}"
    return f"  {contact.type:<8} {value:<40} {contact.contact_pid}{note}"


def format_answer(answer: identity_pb2.ResolveResponse) -> str:
    """The answer as a few readable lines."""
    lines = [f"status:       {status_name(answer.status)}"]
    if answer.reason:
        lines.append(f"reason:       {answer.reason}")
    if answer.contact_pid:
        lines.append(f"contact pid:  {answer.contact_pid}")
    if answer.HasField("customer"):
        customer = answer.customer
        kind = "anonymous" if customer.anonymous else "known"
        lines.append(f"customer pid: {customer.customer_pid} ({kind})")
        if customer.redirected_from:
            lines.append(f"  redirected from {customer.redirected_from}")
        if customer.labels:
            lines.append(f"labels:       {', '.join(customer.labels)}")
        lines.append(f"contacts ({len(customer.contacts)}):")
        lines.extend(_contact_line(c) for c in customer.contacts)
    if answer.suggestions:
        lines.append(f"suggestions ({len(answer.suggestions)}):")
        lines.extend(
            f"  {s.customer_pid}  score {s.score:.2f}  {s.reason}" for s in answer.suggestions
        )
    return "\n".join(lines)


def resolve_command(
    target: str,
    token: str | None,
    account: str,
    type: str,  # noqa: A002 - the field's name in the API
    value: str,
    source: str = "",
    create: bool = False,
) -> int:
    """Resolve one contact, print the answer; the exit status."""
    try:
        with IdlinkClient(target, token or None) as client:
            answer = client.resolve(account, type, value, source, create_if_missing=create)
    except IdlinkError as error:
        print(f"idlink resolve: {error}", file=sys.stderr)
        if error.field:
            print(f"  (field {error.field})", file=sys.stderr)
        if error.code == grpc.StatusCode.INVALID_ARGUMENT:
            return EXIT_INVALID
        if error.code == grpc.StatusCode.NOT_FOUND:
            return EXIT_NOT_FOUND
        return EXIT_ERROR
    print(format_answer(answer))
    return _EXIT_BY_STATUS.get(answer.status, EXIT_ERROR)
