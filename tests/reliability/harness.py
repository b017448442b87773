"""What the reliability tests and scripts share: a server subprocess, keys, records, checks.

The server runs as ``python -m idlink serve`` on 127.0.0.1 over a data folder
that outlives it, so a test can kill it (SIGKILL, by PID), start it again on
the same folder and look at the store offline afterwards. Every wait is
bounded. Authentication: an admin key of the test's account is created in the
store before the server starts (``idlink.security.apikeys.create_key``, what
``idlink keys create`` does) and sent on every call.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from idlink.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2_grpc,
)

# A small cap and a one-per-customer key type, so the cap and key-limit checks bite.
CAP = 8
ISOLATE_AT = 3
MEMBER_TYPE = "member"


class Client:
    """Stubs of the three services with the caller's key on every call."""

    def __init__(self, target: str, token: str | None) -> None:
        self.channel = grpc.insecure_channel(target)
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.profile = profile_pb2_grpc.ProfileServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def configure_account(client: Client, account: str) -> None:
    """The small cap and the one-per-customer ``member`` key type."""
    client.admin.SetAccountPolicy(
        admin_pb2.SetAccountPolicyRequest(
            account=account,
            policy=common_pb2.AccountPolicy(max_contacts=CAP, isolate_min_connections=ISOLATE_AT),
        ),
        metadata=client.metadata,
        timeout=30,
    )
    client.admin.PutKeyType(
        admin_pb2.PutKeyTypeRequest(
            account=account,
            key_type=common_pb2.KeyType(
                name=MEMBER_TYPE, normalizer=common_pb2.NORMALIZER_TRIM, max_per_customer=1
            ),
        ),
        metadata=client.metadata,
        timeout=30,
    )


# -- records -------------------------------------------------------------------------

BASE_US = 1_700_000_000_000_000
PLACEHOLDER_EMAIL = "no@email.com"


@dataclass(frozen=True, slots=True)
class RecordShape:
    source: str
    record_id: str
    contacts: tuple[tuple[str, str], ...]
    observed_at_us: int


def batch_records(seed: int, seq: int, size: int, people: int = 5000) -> list[RecordShape]:
    """The records of batch ``seq``: the same for the same arguments, whoever asks.

    Each record is about one of ``people`` persons (a phone, maybe a second
    phone, an email, a ``member`` id, a device). Now and then a record carries
    a second member id (a key-limit conflict), another person's device (a
    device move) or the placeholder email (which glues persons together until
    the cap isolates it). One record in ten arrives out of canonical order,
    which makes the engine replay.
    """
    rng = random.Random(seed * 1_000_003 + seq)
    records = []
    for i in range(size):
        n = (seq - 1) * size + i
        person = rng.randrange(people)
        contacts = [("phone", f"+1415{person:07d}")]
        if rng.random() < 0.1:
            contacts.append(("phone", f"+1416{person:07d}"))
        if rng.random() < 0.5:
            contacts.append(("email", f"user{person}@example.com"))
        if rng.random() < 0.2:
            contacts.append((MEMBER_TYPE, f"M{person}" + ("x" if rng.random() < 0.1 else "")))
        if rng.random() < 0.1:
            owner = rng.randrange(people) if rng.random() < 0.2 else person
            contacts.append(("device", f"dev-{owner}"))
        if rng.random() < 0.01:
            contacts.append(("email", PLACEHOLDER_EMAIL))
        late = rng.randrange(5_000) * 1000 if rng.random() < 0.1 else 0
        records.append(
            RecordShape(
                source=rng.choice(("crm", "desk")),
                record_id=f"r{seq}-{i}",
                contacts=tuple(contacts),
                observed_at_us=BASE_US + n * 1000 - late,
            )
        )
    return records


def record_message(record: RecordShape) -> identity_pb2.Record:
    message = identity_pb2.Record(source=record.source, record_id=record.record_id)
    message.observed_at.FromMicroseconds(record.observed_at_us)
    for kind, value in record.contacts:
        message.contacts.add(type=kind, value=value)
    return message


def ingest_request(
    account: str, seq: int, records: Sequence[RecordShape]
) -> identity_pb2.IngestRequest:
    return identity_pb2.IngestRequest(
        account=account, seq=seq, records=[record_message(r) for r in records]
    )


# -- offline checks -----------------------------------------------------------------


@contextlib.contextmanager
def offline_engine(data: Path) -> Iterator[object]:
    """An engine over the store of a stopped (or killed) server."""
    from idlink.domain.engine import IdentityEngine
    from idlink.security.crypto import open_store
    from idlink.security.secrets import load_master_secret

    with open_store(data, multi_process=True) as store:
        yield IdentityEngine(store, load_master_secret(data))


def missing_records(engine: object, account: str, records: Sequence[RecordShape]) -> list[str]:
    """The records of ``records`` the store does not hold."""
    missing = []
    with engine.read(account) as view:  # type: ignore[attr-defined]
        if not view.exists:
            return [f"{r.source}/{r.record_id}" for r in records]
        for record in records:
            found = view.txn.get_record(record.source, record.record_id)
            if found is None or found.observed_at_us != record.observed_at_us:
                missing.append(f"{record.source}/{record.record_id}")
    return missing


def store_problems(data: Path) -> list[str]:
    """Every invariant problem of the store of ``data`` (``idlink check``)."""
    from idlink.domain.check import check_store

    with offline_engine(data) as engine:
        return [
            f"{report.account}: {problem}"
            for report in check_store(engine)  # type: ignore[arg-type]
            for problem in report.problems
        ]


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
