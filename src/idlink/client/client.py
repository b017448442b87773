"""A small typed client for the idlink gRPC API (``idlink.v1``).

One channel per client; every call sends ``authorization: Bearer <token>``
when a token is given, and has a deadline. Calls that are safe to repeat --
reads, and writes carrying a ``request_id`` (the client makes one up when the
caller gives none) -- are retried with exponential backoff and jitter on
``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` and ``RESOURCE_EXHAUSTED``.

``ingest`` streams records in numbered batches and survives a dropped
connection: it reconnects and resends the batches the server has not yet
acknowledged (records are upserts by ``(source, record_id)``, so a record
sent twice is harmless; see docs/api.md, "Ingest").
"""

from __future__ import annotations

import collections
import datetime as dt
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2

from idlink.v1 import (
    admin_pb2_grpc,
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
)

__all__ = [
    "ContactLike",
    "IdlinkClient",
    "IdlinkError",
    "RETRYABLE_CODES",
    "contact_key",
    "to_timestamp",
]

T = TypeVar("T")

#: A contact as callers may give it: a ContactKey, or (type, value[, source]).
ContactLike = common_pb2.ContactKey | tuple[str, str] | tuple[str, str, str]

#: Status codes worth another attempt of an idempotent call.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# A batch of BatchResolve holds at most this many contacts (docs/api.md).
MAX_BATCH_RESOLVE = 1000
# An ingest batch holds at most this many records (docs/api.md).
MAX_INGEST_BATCH = 10_000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted server should be found again within seconds, not minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
]


class IdlinkError(Exception):
    """A failed call: the gRPC status code, its message and idlink's error details."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, reason: str = "", field: str = ""
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> IdlinkError:
        """Build from a grpc error, reading its ``google.rpc.Status`` (ErrorInfo, BadRequest).

        A server of an earlier release sends only ``idlink-error-reason`` /
        ``-field`` trailing metadata: those are read when the status has no details.
        """
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        details = {m.key: m.value for m in (trailing or ())}
        reason = str(details.get("idlink-error-reason", ""))
        field = str(details.get("idlink-error-field", ""))
        rich = details.get(_STATUS_DETAILS_KEY)
        if isinstance(rich, bytes):
            reason, field = _reason_and_field(rich, reason, field)
        return cls(code or grpc.StatusCode.UNKNOWN, message or "", reason=reason, field=field)


_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _reason_and_field(data: bytes, reason: str, field: str) -> tuple[str, str]:
    """The ErrorInfo reason and the BadRequest field of a serialised google.rpc.Status."""
    try:
        status = status_pb2.Status.FromString(data)
    except Exception:  # not a status: keep what the metadata said
        return reason, field
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or reason
            field = info.metadata.get("field", field)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                field = bad.field_violations[0].field
    return reason, field


def contact_key(contact: ContactLike) -> common_pb2.ContactKey:
    """Turn a ContactKey or a (type, value[, source]) tuple into a ContactKey."""
    if isinstance(contact, common_pb2.ContactKey):
        return contact
    if len(contact) == 2:
        return common_pb2.ContactKey(type=contact[0], value=contact[1])
    return common_pb2.ContactKey(type=contact[0], value=contact[1], source=contact[2])


def to_timestamp(value: dt.datetime | float | Timestamp | None) -> Timestamp | None:
    """A Timestamp from a datetime (naive means UTC), epoch seconds or a Timestamp."""
    if value is None or isinstance(value, Timestamp):
        return value
    stamp = Timestamp()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        stamp.FromDatetime(value.astimezone(dt.UTC))
        return stamp
    seconds = float(value)
    whole = int(seconds // 1)
    stamp.seconds = whole
    stamp.nanos = int(round((seconds - whole) * 1e9)) % 1_000_000_000
    return stamp


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    delay = min(cap, base * (2**attempt))
    return delay / 2 + random.uniform(0, delay / 2)


class _IngestStream:
    """The state of one Ingest stream (one connection attempt)."""

    def __init__(self) -> None:
        self.stopped = False
        self.sent_seq = 0
        self.timed_out = False
        self.started = time.monotonic()
        self.call: Any = None


class IdlinkClient:
    """A connection to one idlink server.

    ``IdlinkClient("127.0.0.1:50051", token)`` for plaintext on loopback;
    ``tls=<PEM root certificates>`` (and optionally ``client_cert`` /
    ``client_key`` for mutual TLS) otherwise. ``timeout`` is the deadline of
    each attempt of a unary call, ``retries`` how many more attempts an
    idempotent call gets. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        tls: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        timeout: float = 2.0,
        retries: int = 3,
        actor: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = max(0, retries)
        if tls is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls, private_key=client_key, certificate_chain=client_cert
            )
            self.channel = grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        metadata: list[tuple[str, str]] = []
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if actor:
            metadata.append(("idlink-actor", actor))
        self.metadata: tuple[tuple[str, str], ...] = tuple(metadata)
        #: The generated stubs, for calls this class does not wrap (pass ``metadata``).
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.profile = profile_pb2_grpc.ProfileServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    # --- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self.channel.close()

    def __enter__(self) -> IdlinkClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the retry loop --------------------------------------------------------------

    def _unary(
        self,
        method: Callable[..., T],
        request: Any,
        *,
        idempotent: bool,
        timeout: float | None = None,
        on_retry_error: Callable[[IdlinkError], T | None] | None = None,
    ) -> T:
        """Call a unary method with a deadline, retrying when it is safe to."""
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as error:
                failure = IdlinkError.from_rpc_error(error)
                if attempt > 0 and on_retry_error is not None:
                    answer = on_retry_error(failure)
                    if answer is not None:
                        return answer
                if failure.code not in RETRYABLE_CODES or attempt + 1 >= attempts:
                    raise failure from None
            time.sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- IdentityService -----------------------------------------------------------

    def resolve(
        self,
        account: str,
        type: str,  # noqa: A002 - the field's name in the API
        value: str,
        source: str = "",
        create_if_missing: bool = False,
    ) -> identity_pb2.ResolveResponse:
        """Who is this contact? The status, contact PID, customer and suggestions."""
        request = identity_pb2.ResolveRequest(
            account=account,
            contact=common_pb2.ContactKey(type=type, value=value, source=source),
            create_if_missing=create_if_missing,
        )
        # Creating a contact that exists already just finds it: safe to repeat.
        return self._unary(self.identity.Resolve, request, idempotent=True)

    def batch_resolve(
        self,
        account: str,
        contacts: Iterable[ContactLike],
        create_if_missing: bool = False,
    ) -> list[identity_pb2.ResolveResponse]:
        """Resolve many contacts, in order (in calls of up to 1000 contacts)."""
        keys = [contact_key(c) for c in contacts]
        answers: list[identity_pb2.ResolveResponse] = []
        for start in range(0, len(keys), MAX_BATCH_RESOLVE):
            request = identity_pb2.BatchResolveRequest(
                account=account,
                contacts=keys[start : start + MAX_BATCH_RESOLVE],
                create_if_missing=create_if_missing,
            )
            response = self._unary(self.identity.BatchResolve, request, idempotent=True)
            answers.extend(response.responses)
        return answers

    def link(
        self,
        account: str,
        source: str,
        record_id: str,
        contacts: Sequence[ContactLike],
        observed_at: dt.datetime | float | Timestamp | None = None,
        *,
        request_id: str | None = None,
    ) -> identity_pb2.LinkResponse:
        """Upsert one record by (source, record_id); its outcome and customer."""
        request = identity_pb2.LinkRequest(
            account=account,
            source=source,
            record_id=record_id,
            contacts=[contact_key(c) for c in contacts],
            observed_at=to_timestamp(observed_at),
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._unary(self.identity.Link, request, idempotent=True)

    def merge_keys(
        self, account: str, contacts: Sequence[ContactLike], *, request_id: str | None = None
    ) -> identity_pb2.MergeKeysResponse:
        """Say these contacts are one person (a manual record; delete it to unmerge)."""
        # The request id becomes the manual record's id, so a retry never adds a second record.
        request = identity_pb2.MergeKeysRequest(
            account=account,
            contacts=[contact_key(c) for c in contacts],
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._unary(self.identity.MergeKeys, request, idempotent=True)

    def delete_record(
        self, account: str, source: str, record_id: str, *, request_id: str | None = None
    ) -> identity_pb2.DeleteRecordResponse:
        """Delete a record; the customers it held together split.

        A retry that reaches a server which no longer remembers the first
        attempt (another process, a restart) finds no record: since an earlier
        attempt may have deleted it, that NOT_FOUND counts as done.
        """
        request = identity_pb2.DeleteRecordRequest(
            account=account,
            source=source,
            record_id=record_id,
            request_id=request_id or uuid.uuid4().hex,
        )

        def deleted_by_earlier_attempt(
            failure: IdlinkError,
        ) -> identity_pb2.DeleteRecordResponse | None:
            if failure.code == grpc.StatusCode.NOT_FOUND:
                return identity_pb2.DeleteRecordResponse()
            return None

        return self._unary(
            self.identity.DeleteRecord,
            request,
            idempotent=True,
            on_retry_error=deleted_by_earlier_attempt,
        )

    def set_contact_policy(
        self,
        account: str,
        contact: ContactLike,
        do_not_link: bool,
        *,
        request_id: str | None = None,
    ) -> identity_pb2.SetContactPolicyResponse:
        """Set or clear do-not-link on a contact, seen or not."""
        request = identity_pb2.SetContactPolicyRequest(
            account=account,
            contact=contact_key(contact),
            do_not_link=do_not_link,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._unary(self.identity.SetContactPolicy, request, idempotent=True)

    # --- ProfileService ------------------------------------------------------------

    def get_customer(self, account: str, customer_pid: str) -> common_pb2.Customer:
        """A customer by PID (an old PID of a merged customer returns the survivor)."""
        request = profile_pb2.GetCustomerRequest(account=account, customer_pid=customer_pid)
        return self._unary(self.profile.GetCustomer, request, idempotent=True)

    def list_journey(
        self, account: str, customer_pid: str, page_size: int = 0
    ) -> Iterator[profile_pb2.ListJourneyResponse]:
        """The pages of a customer's journey, oldest engagement first."""
        token = ""
        while True:
            request = profile_pb2.ListJourneyRequest(
                account=account, customer_pid=customer_pid, page_size=page_size, page_token=token
            )
            page = self._unary(self.profile.ListJourney, request, idempotent=True)
            yield page
            token = page.next_page_token
            if not token:
                return

    def watch_changes(
        self, account: str, after_seq: int = 0, *, reconnect: bool = True
    ) -> Iterator[common_pb2.ChangeEvent]:
        """The change feed after ``after_seq``: the replay, then live events.

        The stream has no deadline (it follows the feed). With ``reconnect``,
        a stream that ends (server shutdown) or breaks is opened again from the
        last seq seen, with backoff; after ``retries`` attempts in a row that
        bring nothing the last error is raised. Stop by closing the iterator.
        """
        last_seq = after_seq
        failures = 0
        while True:
            request = profile_pb2.WatchChangesRequest(account=account, after_seq=last_seq)
            call = self.profile.WatchChanges(request, metadata=self.metadata)
            progressed = False
            try:
                for response in call:
                    for event in response.events:
                        if event.seq <= last_seq:
                            continue
                        last_seq = event.seq
                        progressed = True
                        yield event
                failure: IdlinkError | None = None
            except grpc.RpcError as error:
                failure = IdlinkError.from_rpc_error(error)
                if failure.code not in RETRYABLE_CODES:
                    raise failure from None
            finally:
                call.cancel()
            if not reconnect:
                if failure is not None:
                    raise failure
                return
            failures = 0 if progressed else failures + 1
            if failures > self.retries:
                raise failure or IdlinkError(
                    grpc.StatusCode.UNAVAILABLE, "the change feed keeps ending"
                )
            time.sleep(backoff_delay(failures))

    # --- ingest ----------------------------------------------------------------------

    def ingest(
        self,
        account: str,
        records: Iterable[identity_pb2.Record],
        batch_size: int = 500,
        *,
        on_ack: Callable[[identity_pb2.IngestAck], None] | None = None,
        reconnect_timeout: float = 30.0,
        ack_timeout: float = 60.0,
        max_in_flight: int = 8,
    ) -> int:
        """Stream records in batches; the last acknowledged (committed) batch seq.

        Batch ``n`` (from 1) holds records ``(n-1)*batch_size`` to
        ``n*batch_size - 1`` of ``records``. At most ``max_in_flight`` batches
        wait for their acknowledgement, so memory stays bounded. When the
        connection drops (or no acknowledgement comes for ``ack_timeout``
        seconds) the client reconnects and resends the batches not yet
        acknowledged; it gives up with the last error when nothing was
        acknowledged for ``reconnect_timeout`` seconds. ``on_ack`` is called
        with every acknowledgement. A server that refuses a batch
        (``INVALID_ARGUMENT``: its message starts ``batch seq <n>:``) ends the
        ingest with that error; the batches before it are committed.
        """
        if not 1 <= batch_size <= MAX_INGEST_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_INGEST_BATCH}")
        source = _batches(account, records, batch_size)
        cond = threading.Condition()
        pending: collections.deque[identity_pb2.IngestRequest] = collections.deque()
        exhausted = False
        source_error: BaseException | None = None
        last_acked = 0
        last_progress = time.monotonic()
        attempt = 0

        def requests(stream: _IngestStream) -> Iterator[identity_pb2.IngestRequest]:
            # Runs in grpc's sending thread. Unacknowledged batches first (a
            # reconnect resends them), then new ones while the window has room.
            nonlocal exhausted, source_error
            while True:
                with cond:
                    while True:
                        if stream.stopped:
                            return
                        batch = next((b for b in pending if b.seq > stream.sent_seq), None)
                        if batch is not None:
                            break
                        if exhausted:
                            return  # half-close: the server acknowledges the rest and ends
                        if len(pending) < max_in_flight:
                            try:
                                batch = next(source, None)
                            except BaseException as exc:  # the caller's iterable failed
                                source_error = exc
                                batch = None
                            if batch is None:
                                exhausted = True
                                return
                            pending.append(batch)
                            break
                        cond.wait(0.5)
                    stream.sent_seq = batch.seq
                yield batch

        def watchdog(stream: _IngestStream) -> None:
            # A deadline for a stream of unknown length: acknowledgements must keep coming.
            while True:
                with cond:
                    if stream.stopped:
                        return
                    since = max(last_progress, stream.started)
                    stalled = bool(pending) and time.monotonic() - since > ack_timeout
                    if stalled:
                        stream.timed_out = True
                    cond.wait(0.25)
                if stalled:
                    stream.call.cancel()
                    return

        while True:
            with cond:
                if exhausted and not pending:
                    return last_acked
            stream = _IngestStream()
            stream.call = self.identity.Ingest(requests(stream), metadata=self.metadata)
            guard = threading.Thread(target=watchdog, args=(stream,), daemon=True)
            guard.start()
            failure: IdlinkError | None = None
            try:
                for ack in stream.call:
                    with cond:
                        while pending and pending[0].seq <= ack.committed_seq:
                            pending.popleft()
                        last_acked = max(last_acked, ack.committed_seq)
                        last_progress = time.monotonic()
                        attempt = 0
                        cond.notify_all()
                    if on_ack is not None:
                        on_ack(ack)
            except grpc.RpcError as error:
                failure = IdlinkError.from_rpc_error(error)
                if stream.timed_out:
                    failure = IdlinkError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no acknowledgement for {ack_timeout:g} s",
                    )
                elif failure.code not in RETRYABLE_CODES and failure.code not in _BROKEN_STREAM:
                    raise failure from None
            finally:
                with cond:
                    stream.stopped = True
                    cond.notify_all()
                stream.call.cancel()
                guard.join()
            if source_error is not None:
                raise source_error
            with cond:
                if exhausted and not pending:
                    return last_acked
                stalled_for = time.monotonic() - last_progress
            # The stream ended early (a dropped connection, or a server shutting
            # down ends it with OK): reconnect and resend what is not acknowledged.
            if stalled_for > reconnect_timeout:
                raise failure or IdlinkError(
                    grpc.StatusCode.UNAVAILABLE, "the ingest stream keeps ending"
                )
            time.sleep(backoff_delay(attempt))
            attempt += 1


# A connection cut mid-stream can surface as these besides UNAVAILABLE.
_BROKEN_STREAM = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN})


def _batches(
    account: str, records: Iterable[identity_pb2.Record], batch_size: int
) -> Iterator[identity_pb2.IngestRequest]:
    """Number the records' batches from 1."""
    seq = 0
    batch: list[identity_pb2.Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= batch_size:
            seq += 1
            yield identity_pb2.IngestRequest(account=account, seq=seq, records=batch)
            batch = []
    if batch:
        seq += 1
        yield identity_pb2.IngestRequest(account=account, seq=seq, records=batch)
