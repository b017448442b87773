"""IdentityService: resolve, link, ingest, explain (SPEC 2, 3, 5). Thin servicer.

Every handler reads its caller once, at its entry (``roles.caller()``, in the
handler's task), and passes the principal to every converter that can reveal
PII, also to work it runs on the thread pool (SPEC 8).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from idlink.domain.contacts import ContactKey
from idlink.domain.engine import (
    MANUAL_SOURCE,
    MAX_CONTACTS_PER_RECORD,
    RecordInput,
    manual_record,
)
from idlink.errors import IdlinkError, InvalidArgument, PermissionDenied, ResourceExhausted
from idlink.security.roles import ROLE_NAMES, WRITER, Principal, caller
from idlink.service import convert, paging
from idlink.service.encoded import Encoded
from idlink.service.ingest import Batch, IngestScheduler, located
from idlink.service.runtime import Runtime, actor
from idlink.service.status import guard_stream, guard_unary
from idlink.v1 import identity_pb2, identity_pb2_grpc

MAX_BATCH_RESOLVE = 1000
MAX_INGEST_BATCH_RECORDS = 10_000
DEFAULT_HISTORY_PAGE = 100
MAX_HISTORY_PAGE = 1000
DEFAULT_EXAMPLES = 5
MAX_EXAMPLES = 100


def _check_may_create(viewer: Principal) -> None:
    """create_if_missing writes a customer: it needs the writer role (SPEC 8)."""
    if viewer.role < WRITER:
        raise PermissionDenied(
            f"create_if_missing needs role {ROLE_NAMES[WRITER]} "
            f"(this key is {viewer.role_name or 'not admitted'}); "
            "resolve without it to look up only",
            field="create_if_missing",
        )


def _renamed(exc: IdlinkError, old: str, new: str) -> IdlinkError:
    """The same error with field names starting with ``old`` starting with ``new``."""
    field = exc.field
    if field and field.startswith(old):
        field = new + field[len(old) :]
    return type(exc)(exc.message.replace(old, new), reason=exc.reason, field=field)


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.engine = runtime.engine

    # -- resolve -------------------------------------------------------------------

    @guard_unary("Resolve")
    async def Resolve(
        self, request: identity_pb2.ResolveRequest, context: aio.ServicerContext
    ) -> identity_pb2.ResolveResponse:
        viewer = caller()
        if not request.create_if_missing:
            return self._look_up(request, viewer)
        return await self._resolve(request, viewer, actor(viewer, context))

    def _look_up(
        self, request: identity_pb2.ResolveRequest, viewer: Principal
    ) -> identity_pb2.ResolveResponse:
        """A resolve that writes nothing: inline, and its response shared (convert)."""
        account = convert.account(request.account)
        key = convert.required_contact(request, "contact")
        return convert.shared_resolution(self.rt.read(self.engine.resolve, account, key), viewer)

    async def _resolve(
        self, request: identity_pb2.ResolveRequest, viewer: Principal, who: str
    ) -> identity_pb2.ResolveResponse:
        if not request.create_if_missing:
            return self._look_up(request, viewer)
        account = convert.account(request.account)
        _check_may_create(viewer)
        key = convert.required_contact(request, "contact")
        # May write: wait for the writer off the loop.
        answer = await self.rt.call(
            self.engine.resolve, account, key, create_if_missing=True, actor=who
        )
        return convert.shared_resolution(answer, viewer)

    @guard_stream("StreamResolve")
    async def StreamResolve(
        self,
        request_iterator: AsyncIterator[identity_pb2.ResolveRequest],
        context: aio.ServicerContext,
    ) -> AsyncIterator[identity_pb2.ResolveResponse]:
        viewer = caller()
        who = actor(viewer, context)
        # Answers come back in request order: each is resolved before the next
        # request is read (reads run inline; a create waits for the writer).
        index = 0
        async for request in request_iterator:
            try:
                if request.create_if_missing:
                    yield await self._resolve(request, viewer, who)
                else:
                    yield self._look_up(request, viewer)
            except IdlinkError as exc:
                raise located(exc, f"request {index}") from None
            index += 1

    @guard_unary("BatchResolve")
    async def BatchResolve(
        self, request: identity_pb2.BatchResolveRequest, context: aio.ServicerContext
    ) -> identity_pb2.BatchResolveResponse | Encoded:
        viewer = caller()
        account = convert.account(request.account)
        if request.create_if_missing:
            _check_may_create(viewer)
        if len(request.contacts) > MAX_BATCH_RESOLVE:
            raise InvalidArgument(
                f"contacts has more than {MAX_BATCH_RESOLVE} entries", field="contacts"
            )
        keys = convert.contact_keys(request.contacts, "contacts")
        who = actor(viewer, context)
        create = request.create_if_missing

        def run() -> list[identity_pb2.ResolveResponse]:
            # One read transaction for the whole batch (a create waits for the writer).
            answers = self.engine.resolve_all(
                account, keys, create_if_missing=create, actor=who, field="contacts"
            )
            return convert.shared_resolutions(answers, viewer)

        if create:  # may write: wait for the writer off the loop
            return convert.batch_resolution(await self.rt.call(run))
        return convert.batch_resolution(self.rt.read(run))

    # -- records --------------------------------------------------------------------

    @guard_unary("Link")
    async def Link(
        self, request: identity_pb2.LinkRequest, context: aio.ServicerContext
    ) -> identity_pb2.LinkResponse:
        viewer = caller()
        account = convert.account(request.account)
        record = convert.record_input(request, "", convert.now_us())
        who = actor(viewer, context)

        async def produce() -> identity_pb2.LinkResponse:
            return await self.rt.call(self._link, account, record, who, viewer)

        return await self.rt.idempotent("Link", viewer, account, request, produce)

    def _link(
        self, account: str, record: RecordInput, who: str, viewer: Principal
    ) -> identity_pb2.LinkResponse:
        try:
            result = self.engine.link(account, record, who)
        except IdlinkError as exc:
            # The engine links one record as a batch of one: name the request's own fields.
            raise _renamed(exc, "records[0].", "") from None
        outcome, conflicts = convert.link_outcome(result)
        response = identity_pb2.LinkResponse(
            outcome=outcome,
            conflicting_customer_pids=conflicts,
            contact_pids=convert.pid_strs(result.contact_pids),
        )
        if result.customer_pid:
            response.customer.CopyFrom(
                convert.customer(self.engine.get_customer(account, result.customer_pid), viewer)
            )
        return response

    @guard_unary("MergeKeys")
    async def MergeKeys(
        self, request: identity_pb2.MergeKeysRequest, context: aio.ServicerContext
    ) -> identity_pb2.MergeKeysResponse:
        viewer = caller()
        account = convert.account(request.account)
        keys = convert.contact_keys(request.contacts, "contacts")
        # With a request id the record id is the request id: a retry is the same record.
        record = manual_record(keys, convert.now_us(), request.request_id)
        record_id = record.record_id
        who = actor(viewer, context) or MANUAL_SOURCE

        async def produce() -> identity_pb2.MergeKeysResponse:
            linked = await self.rt.call(self._link, account, record, who, viewer)
            return identity_pb2.MergeKeysResponse(
                customer=linked.customer,
                outcome=linked.outcome,
                source=MANUAL_SOURCE,
                record_id=record_id,
                conflicting_customer_pids=linked.conflicting_customer_pids,
            )

        return await self.rt.idempotent("MergeKeys", viewer, account, request, produce)

    @guard_stream("Ingest")
    async def Ingest(
        self,
        request_iterator: AsyncIterator[identity_pb2.IngestRequest],
        context: aio.ServicerContext,
    ) -> AsyncIterator[identity_pb2.IngestAck]:
        who = actor(caller(), context)

        async def batches() -> AsyncIterator[Batch]:
            last_seq = 0
            async for request in request_iterator:
                batch = self._ingest_batch(request, last_seq)
                last_seq = batch.seq
                yield batch

        async for ack in IngestScheduler(self.engine, who, self.rt.metrics).acks(batches()):
            yield ack

    def _ingest_batch(self, request: identity_pb2.IngestRequest, last_seq: int) -> Batch:
        where = f"batch seq {request.seq}"
        try:
            account = convert.account(request.account)
            if request.seq <= last_seq:
                raise InvalidArgument(
                    f"seq must increase within a stream (previous {last_seq})",
                    field="seq",
                    reason="SEQ_NOT_INCREASING",
                )
            if len(request.records) > MAX_INGEST_BATCH_RECORDS:
                raise ResourceExhausted(
                    f"a batch holds at most {MAX_INGEST_BATCH_RECORDS} records", field="records"
                )
            now = convert.now_us()
            records = []
            for i, message in enumerate(request.records):
                if len(message.contacts) > MAX_CONTACTS_PER_RECORD:
                    raise InvalidArgument(
                        f"records[{i}].contacts names more than {MAX_CONTACTS_PER_RECORD} contacts",
                        field=f"records[{i}].contacts",
                    )
                records.append(convert.record_input(message, f"records[{i}]", now))
        except IdlinkError as exc:
            raise located(exc, where) from None
        return Batch(account, request.seq, records)

    @guard_unary("DeleteRecord")
    async def DeleteRecord(
        self, request: identity_pb2.DeleteRecordRequest, context: aio.ServicerContext
    ) -> identity_pb2.DeleteRecordResponse:
        viewer = caller()
        account = convert.account(request.account)
        who = actor(viewer, context)

        async def produce() -> identity_pb2.DeleteRecordResponse:
            await self.rt.call(
                self.engine.delete_record, account, request.source, request.record_id, who
            )
            return identity_pb2.DeleteRecordResponse()

        return await self.rt.idempotent("DeleteRecord", viewer, account, request, produce)

    @guard_unary("SetContactPolicy")
    async def SetContactPolicy(
        self, request: identity_pb2.SetContactPolicyRequest, context: aio.ServicerContext
    ) -> identity_pb2.SetContactPolicyResponse:
        viewer = caller()
        account = convert.account(request.account)
        key = convert.required_contact(request, "contact")
        paths = list(request.update_mask.paths) or ["do_not_link"]
        changes: dict[str, bool] = {}
        for i, path in enumerate(paths):
            if path not in ("do_not_link", "never_isolate"):
                raise InvalidArgument(
                    f"update_mask.paths[{i}] must be do_not_link or never_isolate",
                    field=f"update_mask.paths[{i}]",
                )
            changes[path] = getattr(request, path)
        who = actor(viewer, context)

        def run() -> identity_pb2.SetContactPolicyResponse:
            pid = self.engine.set_contact_policy(account, key, actor=who, **changes)
            response = identity_pb2.SetContactPolicyResponse(contact_pid=convert.pid_str(pid))
            answer = self.engine.resolve(account, key)
            if answer.customer is not None:
                response.customer.CopyFrom(convert.customer(answer.customer, viewer))
            return response

        async def produce() -> identity_pb2.SetContactPolicyResponse:
            return await self.rt.call(run)

        return await self.rt.idempotent("SetContactPolicy", viewer, account, request, produce)

    # -- explain, history, preview ------------------------------------------------------

    @guard_unary("ExplainLink")
    async def ExplainLink(
        self, request: identity_pb2.ExplainLinkRequest, context: aio.ServicerContext
    ) -> identity_pb2.ExplainLinkResponse:
        viewer = caller()
        account = convert.account(request.account)
        first = convert.required_contact(request, "contact")
        other: ContactKey | None = None
        if request.HasField("other"):
            other = convert.contact_key(request.other, "other")
        result = await self.rt.call(self.engine.explain, account, first, other)
        return convert.explanation(result, viewer)

    @guard_unary("GetCustomerHistory")
    async def GetCustomerHistory(
        self, request: identity_pb2.GetCustomerHistoryRequest, context: aio.ServicerContext
    ) -> identity_pb2.GetCustomerHistoryResponse:
        account = convert.account(request.account)
        pid = convert.parse_pid(request.customer_pid, "customer_pid")
        # Bound to the customer (AIP-158): a token of customer A does not page B.
        page = paging.page_request(
            "history",
            request,
            default=DEFAULT_HISTORY_PAGE,
            maximum=MAX_HISTORY_PAGE,
            bound_to=(account, pid),
            position_bytes=8,  # a change sequence number
        )
        after = int.from_bytes(page.after, "big")
        events = await self.rt.call(self.engine.history, account, pid)
        shown, token = paging.paged(
            [e for e in events if e.seq > after], page, lambda e: e.seq.to_bytes(8, "big")
        )
        return identity_pb2.GetCustomerHistoryResponse(
            events=[convert.change_event(e) for e in shown], next_page_token=token
        )

    @guard_unary("PreviewConfigChange")
    async def PreviewConfigChange(
        self, request: identity_pb2.PreviewConfigChangeRequest, context: aio.ServicerContext
    ) -> identity_pb2.PreviewConfigChangeResponse:
        account = convert.account(request.account)
        if not request.HasField("key_type") and not request.HasField("policy"):
            raise InvalidArgument("key_type or policy is required", field="key_type")
        key_type = convert.key_type(request.key_type) if request.HasField("key_type") else None
        if key_type is not None:
            key_type.validate()
        policy = convert.account_policy(request.policy) if request.HasField("policy") else None
        if policy is not None:
            policy.validate()
        examples = min(request.max_examples or DEFAULT_EXAMPLES, MAX_EXAMPLES)
        result = await self.rt.call(
            self.engine.preview, account, key_type=key_type, policy=policy, examples=examples
        )
        return convert.preview(result)
