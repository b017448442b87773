"""A batch's contacts prepared at once give what one contact at a time gives (SPEC 2.1-2.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlink.domain.contacts import (
    MAX_RAW_VALUE_BYTES,
    ContactKey,
    national_number,
    national_numbers,
    prepare_contact,
    prepare_contacts,
)
from idlink.domain.keytypes import AccountConfig, KeyType
from idlink.errors import InvalidArgument

SECRET = b"s" * 32

KEYS = [
    ContactKey("phone", "+1 415 555 0001"),
    ContactKey("email", " Ann@X.com "),
    ContactKey("id", "C-1", "crm"),
    ContactKey("id", "C-1", "desk"),  # another source: another contact
    ContactKey("phone", "12"),  # invalid: PHONE_LENGTH
    ContactKey("email", "null"),  # invalid: EMAIL_FORMAT
    ContactKey("email", "unknown@x.com"),  # blocked by the test's key type
    ContactKey("phone", "+1 415 555 0001"),  # a repeat
    ContactKey("device", "dev-1"),
    ContactKey("email", "bob@x.com"),
]


def config() -> AccountConfig:
    cfg = AccountConfig("acme", 1)
    email = cfg.key_types["email"]
    cfg.key_types["email"] = KeyType(
        email.name, email.normalizer, blocked_values=("unknown@x.com",)
    )
    return cfg


def test_prepared_at_once_equals_one_by_one(impl):
    cfg = config()
    fields = [(key, f"records[0].contacts[{i}]") for i, key in enumerate(KEYS)]
    assert prepare_contacts(SECRET, cfg, fields) == [
        prepare_contact(SECRET, cfg, key, field) for key, field in fields
    ]
    reasons = [p.invalid_reason for p in prepare_contacts(SECRET, cfg, fields)]
    assert reasons[4:7] == ["PHONE_LENGTH", "EMAIL_FORMAT", "BLOCKED"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (ContactKey("fax", "1"), "records[1].contacts[2].type"),
        (ContactKey("id", "1", "x" * 200), "records[1].contacts[2].source"),
        (ContactKey("email", "a" * (MAX_RAW_VALUE_BYTES + 1)), "records[1].contacts[2].value"),
        (ContactKey("email", "\ud800@x.com"), "records[1].contacts[2].value"),
    ],
)
def test_the_first_bad_contact_is_named(impl, bad, field):
    keys = [
        (KEYS[0], "records[0].contacts[0]"),
        (bad, "records[1].contacts[2]"),
        (ContactKey("fax", "2"), "records[2].contacts[0]"),  # also bad, but later
    ]
    with pytest.raises(InvalidArgument) as raised:
        prepare_contacts(SECRET, config(), keys)
    assert raised.value.field == field


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.from_regex(r"\+[0-9]{0,6}", fullmatch=True),
            st.from_regex(r"\+[0-9٠-٩a]{0,4}", fullmatch=True),  # non-ASCII digits, letters
            st.text(max_size=5),
        ),
        max_size=30,
    )
)
def test_national_numbers_of_a_column_are_each_values_national_number(values):
    for key_type in AccountConfig("acme", 1).key_types.values():
        assert national_numbers(key_type, values) == [national_number(key_type, v) for v in values]
