"""SPEC 3.4, 3.8 through a real server: a shared device never takes a customer PID.

Medallia MXO use case 6, as a contact-centre integrator meets it: a CRM that
holds customer PID Q for person 456 must keep seeing person 456 behind Q,
whoever logs in on the family tablet next.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from idlink.v1 import admin_pb2, common_pb2, identity_pb2, profile_pb2
from tests.service.conftest import key


def login(client, account, record_id, *contacts, seconds):
    return client.identity.Link(
        identity_pb2.LinkRequest(
            account=account,
            source="login",
            record_id=record_id,
            contacts=list(contacts),
            observed_at=Timestamp(seconds=1_700_000_000 + seconds),
        )
    )


def get_customer(client, account, customer_pid):
    return client.profile.GetCustomer(
        profile_pb2.GetCustomerRequest(account=account, customer_pid=customer_pid)
    )


def values(customer) -> list[str]:
    return sorted(c.value for c in customer.contacts)


def test_mxo_use_case_6_a_shared_tablet_leaves_the_customer_pid_behind(client, account):
    client.admin.PutKeyType(
        admin_pb2.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(name="customer_key", max_per_customer=1),
        )
    )
    tablet, first, second = (
        key("device", "tablet-1"),
        key("customer_key", "123"),
        key("customer_key", "456"),
    )
    one = login(
        client, account, "login-1", tablet, first, key("email", "first@home.example"), seconds=1
    )
    p = one.customer.customer_pid
    assert values(one.customer) == ["123", "first@home.example", "tablet-1"]

    two = login(client, account, "login-2", tablet, second, seconds=2)
    assert two.outcome == common_pb2.RECORD_OUTCOME_APPLIED
    q = two.customer.customer_pid
    assert q != p
    assert values(two.customer) == ["456", "tablet-1"]
    kept = get_customer(client, account, p)
    assert kept.customer_pid == p and values(kept) == ["123", "first@home.example"]

    three = login(client, account, "login-3", tablet, first, seconds=3)
    assert three.outcome == common_pb2.RECORD_OUTCOME_APPLIED
    assert three.customer.customer_pid == p
    assert values(three.customer) == ["123", "first@home.example", "tablet-1"]
    # A CRM holding Q for person 456 still finds person 456 there, and only 456.
    still = get_customer(client, account, q)
    assert still.customer_pid == q and not still.redirected_from
    assert values(still) == ["456"]
