"""Key types, blocked values, priorities and account policy (SPEC 2.4, 3.3, 3.8)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property

from idlink.domain import patterns
from idlink.errors import FailedPrecondition, InvalidArgument


class Normalizer(IntEnum):
    """How a key type cleans its values (the numbers of ``idlink.v1.Normalizer``).

    A test checks the numbers against the proto and the ``_native`` twins,
    which keep plain constants of the same numbers.
    """

    TRIM = 1
    PHONE = 2
    EMAIL = 3


NORMALIZER_TRIM = Normalizer.TRIM
NORMALIZER_PHONE = Normalizer.PHONE
NORMALIZER_EMAIL = Normalizer.EMAIL
NORMALIZERS = {NORMALIZER_TRIM: "trim", NORMALIZER_PHONE: "phone", NORMALIZER_EMAIL: "email"}

DEFAULT_MAX_CONTACTS = 100
DEFAULT_ISOLATE_MIN_CONNECTIONS = 20
MAX_KEY_TYPES = 64
# Key-type priority (SPEC 3.8): the first part of the contact order, smaller
# first. 0 in a request means the type's default rank; the rank in force is
# stored and shown.
DEFAULT_PRIORITIES = {"id": 10, "email": 20, "phone": 30, "device": 40}
ADDED_TYPE_PRIORITY = 50
MAX_PRIORITY = 1_000_000
_MAX_CACHED_VERDICTS = 1 << 16
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# Withheld caller ids ("anonymous", "restricted") clean to nothing and are
# invalid anyway; these catch the all-zero and one-repeated-digit fillers
# (RE2 syntax, domain/patterns.py: one repeated digit without a backreference).
DEFAULT_PHONE_BLOCKED_PATTERNS = (r"^\+?0+$", patterns.REPEATED_DIGIT)


@dataclass(frozen=True)
class KeyType:
    """One kind of contact of an account."""

    name: str
    normalizer: int = NORMALIZER_TRIM
    source_scoped: bool = False
    max_per_customer: int = 0
    reassignable: bool = False
    anonymous: bool = False
    blocked_values: tuple[str, ...] = ()
    blocked_patterns: tuple[str, ...] = ()
    # Rank in the contact order (SPEC 3.8); 0 is replaced by the type's default.
    priority: int = 0

    def __post_init__(self) -> None:
        if not self.priority:
            object.__setattr__(self, "priority", default_priority(self.name))

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidArgument(
                "key_type.name must be 1-32 characters of a-z, 0-9 and _, starting with a letter",
                field="key_type.name",
            )
        if self.normalizer not in NORMALIZERS:
            raise InvalidArgument(
                "key_type.normalizer must be TRIM, PHONE or EMAIL", field="key_type.normalizer"
            )
        if not 0 < self.priority <= MAX_PRIORITY:
            raise InvalidArgument(
                f"key_type.priority must be 0 (the default) to {MAX_PRIORITY}",
                field="key_type.priority",
            )
        patterns.validate_blocked(self.blocked_patterns)

    @cached_property
    def _compiled(self) -> patterns.BlockedPatterns:
        return patterns.compile_blocked(self.blocked_patterns)

    @cached_property
    def _verdicts(self) -> dict[str, bool]:
        return {}

    def is_blocked(self, cleaned: str) -> bool:
        """Whether a cleaned value is one of this type's placeholders."""
        verdicts = self._verdicts
        found = verdicts.get(cleaned)
        if found is None:
            found = cleaned in self.blocked_values or self._compiled.search(cleaned)
            if len(verdicts) >= _MAX_CACHED_VERDICTS:
                verdicts.clear()
            verdicts[cleaned] = found
        return found

    def identity_changed(self, other: KeyType) -> bool:
        """Whether replacing self by other would change contact PIDs or values."""
        return (self.normalizer, self.source_scoped) != (other.normalizer, other.source_scoped)


def default_priority(name: str) -> int:
    """The rank of a type whose priority is not set: id, email, phone, device, then added types."""
    return DEFAULT_PRIORITIES.get(name, ADDED_TYPE_PRIORITY)


def default_key_types() -> dict[str, KeyType]:
    return {
        "phone": KeyType(
            "phone", NORMALIZER_PHONE, blocked_patterns=DEFAULT_PHONE_BLOCKED_PATTERNS
        ),
        "email": KeyType("email", NORMALIZER_EMAIL),
        "id": KeyType("id", NORMALIZER_TRIM, source_scoped=True),
        "device": KeyType("device", NORMALIZER_TRIM, reassignable=True, anonymous=True),
    }


@dataclass(frozen=True)
class AccountPolicy:
    """Account-wide linking policy; 0 in a request means the default."""

    max_contacts: int = DEFAULT_MAX_CONTACTS
    isolate_min_connections: int = DEFAULT_ISOLATE_MIN_CONNECTIONS

    def validate(self) -> None:
        if self.max_contacts < 2:
            raise InvalidArgument(
                "policy.max_contacts must be at least 2", field="policy.max_contacts"
            )


@dataclass
class AccountConfig:
    """Everything about an account that linking depends on."""

    name: str
    account_id: int
    key_types: dict[str, KeyType] = field(default_factory=default_key_types)
    policy: AccountPolicy = field(default_factory=AccountPolicy)
    # Whether every contact's ``refused`` is kept (AccountState.refusals_marked):
    # then a resolve skips the records of a linkable contact no refused record names.
    marks_refusals: bool = False

    def key_type(self, name: str, field: str = "contact.type") -> KeyType:
        try:
            return self.key_types[name]
        except KeyError:
            raise InvalidArgument(
                f"unknown key type {name!r}; known: {', '.join(sorted(self.key_types))}",
                field=field,
                reason="UNKNOWN_KEY_TYPE",
            ) from None

    def with_key_type(self, key_type: KeyType) -> AccountConfig:
        key_type.validate()
        existing = self.key_types.get(key_type.name)
        if existing is None and len(self.key_types) >= MAX_KEY_TYPES:
            raise FailedPrecondition(f"an account has at most {MAX_KEY_TYPES} key types")
        types = dict(self.key_types)
        types[key_type.name] = key_type
        return replace(self, key_types=types)

    def with_policy(self, policy: AccountPolicy) -> AccountConfig:
        policy.validate()
        return replace(self, key_types=dict(self.key_types), policy=policy)
