"""What callers read: customers, resolve answers, suggestions, explanations (SPEC 3.7, 5).

The values a read gives; :mod:`idlink.domain.reads` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from idlink.store.txn import ContactState, Profile


class ResolveStatus(IntEnum):
    """A resolve's answer (the numbers of ``idlink.v1.ResolveStatus``, checked by a test)."""

    FOUND = 1
    CREATED = 2
    NOT_FOUND = 3
    INVALID = 4
    NOT_LINKABLE = 5


FOUND = ResolveStatus.FOUND
CREATED = ResolveStatus.CREATED
NOT_FOUND = ResolveStatus.NOT_FOUND
INVALID = ResolveStatus.INVALID
NOT_LINKABLE = ResolveStatus.NOT_LINKABLE

MAX_SUGGESTIONS = 10


@dataclass(slots=True)
class ContactView:
    pid: bytes
    type: str
    value: str
    source: str
    linkable: bool
    reason: str = ""  # why it is not linkable: the invalid reason, DO_NOT_LINK, ISOLATED
    # Distinct other contacts it shares an applied record with, now (SPEC 3.3):
    # the one count shown everywhere, also for an isolated contact.
    connections: int = 0


@dataclass(slots=True)
class CustomerView:
    pid: bytes
    contacts: list[ContactView]
    anonymous: bool
    profile: Profile
    created_at_us: int = 0
    split_from: bytes = b""
    redirected_from: bytes = b""


@dataclass(slots=True)
class Suggestion:
    customer_pid: bytes
    reason: str
    score: float


@dataclass(slots=True)
class Resolution:
    status: int
    contact_pid: bytes
    customer: CustomerView | None = None
    suggestions: list[Suggestion] = field(default_factory=list)
    reason: str = ""


@dataclass(slots=True)
class Hop:
    source: str
    record_id: str
    observed_at_us: int
    from_contact: bytes
    to_contact: bytes


@dataclass(slots=True)
class Explanation:
    linked: bool
    customer_pid: bytes = b""
    hops: list[Hop] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def isolated_reason(contact: ContactState) -> str:
    """Why an isolated contact stands alone, with its connection count now (SPEC 2.5, 3.3).

    The count is over every applied record, as ListIsolatedContacts shows it
    and a rebuild gives it: not the count the contact had when it was isolated,
    which depends on where in the records the cap was first reached.
    """
    return f"ISOLATED: {contact.connections} connections"
