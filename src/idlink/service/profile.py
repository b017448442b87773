"""ProfileService: customers, profiles, journeys, the change feed (SPEC 4, 6, 7). Thin.

Every handler reads its caller once, at its entry, and passes the principal to
the converters that can reveal PII (customers, engagements), wherever they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from grpc import aio

from idlink.domain import profiles
from idlink.errors import InvalidArgument
from idlink.security.roles import caller
from idlink.service import convert
from idlink.service.runtime import Runtime, actor
from idlink.service.status import guard_stream, guard_unary
from idlink.v1 import common_pb2, profile_pb2, profile_pb2_grpc

WATCH_BATCH = 500
WATCH_POLL_SECONDS = 1.0
MAX_ENGAGEMENT_ATTRIBUTES = 64
MAX_ENGAGEMENT_ATTRIBUTE_BYTES = 4096
# Engagement ids derived from request ids: the same request id gives the same engagement.
_ENGAGEMENT_NAMESPACE = uuid.UUID("6f3c2a56-8a3e-4f57-9d7e-5c1b3f0e9a11")


def _profile_update(request: profile_pb2.UpdateCustomerRequest) -> profiles.ProfileUpdate:
    """The changes a field mask selects (AIP-134); an empty mask means every field given."""
    customer = request.customer
    update = profiles.ProfileUpdate(
        add_labels=list(request.add_labels), remove_labels=list(request.remove_labels)
    )
    paths = list(request.update_mask.paths)
    if not paths:
        paths = [f"attributes.{name}" for name in customer.attributes]
        if customer.labels:
            paths.append("labels")
        if customer.HasField("preferences"):
            paths.append("preferences")
    for i, path in enumerate(paths):
        head, _, name = path.partition(".")
        if path == "attributes":
            update.replace_attributes = True
            for key, value in customer.attributes.items():
                update.set_attributes[key] = convert.domain_value(value, f"attributes.{key}")
        elif head == "attributes" and name:
            if name in customer.attributes:
                update.set_attributes[name] = convert.domain_value(
                    customer.attributes[name], f"attributes.{name}"
                )
            else:
                update.clear_attributes.add(name)
        elif path == "labels":
            update.labels = list(customer.labels)
        elif path == "preferences":
            update.preferences = (
                convert.domain_preferences(customer.preferences)
                if customer.HasField("preferences")
                else {}
            )
        else:
            raise InvalidArgument(
                f"update_mask.paths[{i}] {path!r} cannot be updated "
                "(attributes, attributes.<name>, labels, preferences)",
                field=f"update_mask.paths[{i}]",
            )
    return update


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.engine = runtime.engine

    # -- customers ----------------------------------------------------------------------

    @guard_unary("GetCustomer")
    async def GetCustomer(
        self, request: profile_pb2.GetCustomerRequest, context: aio.ServicerContext
    ) -> common_pb2.Customer:
        viewer = caller()
        account = convert.account(request.account)
        pid = convert.parse_pid(request.customer_pid, "customer_pid")
        view = await self.rt.call(self.engine.get_customer, account, pid)
        return convert.customer(view, viewer)

    @guard_unary("UpdateCustomer")
    async def UpdateCustomer(
        self, request: profile_pb2.UpdateCustomerRequest, context: aio.ServicerContext
    ) -> common_pb2.Customer:
        viewer = caller()
        account = convert.account(request.account)
        if not request.HasField("customer"):
            raise InvalidArgument("customer is required", field="customer")
        pid = convert.parse_pid(request.customer.customer_pid, "customer.customer_pid")
        update = _profile_update(request)
        who = actor(viewer, context)

        async def produce() -> common_pb2.Customer:
            view = await self.rt.call(
                profiles.update_customer, self.engine, account, pid, update, who
            )
            return convert.customer(view, viewer)

        return await self.rt.idempotent("UpdateCustomer", viewer, account, request, produce)

    # -- schema ---------------------------------------------------------------------------

    @guard_unary("GetSchema")
    async def GetSchema(
        self, request: profile_pb2.GetSchemaRequest, context: aio.ServicerContext
    ) -> profile_pb2.Schema:
        account = convert.account(request.account)
        schema = await self.rt.call(profiles.get_schema, self.engine, account)
        return convert.schema(account, schema)

    @guard_unary("UpdateSchema")
    async def UpdateSchema(
        self, request: profile_pb2.UpdateSchemaRequest, context: aio.ServicerContext
    ) -> profile_pb2.Schema:
        viewer = caller()
        if not request.HasField("schema"):
            raise InvalidArgument("schema is required", field="schema")
        account = convert.account(request.schema.account)
        given = {f.name: (i, f) for i, f in enumerate(request.schema.fields)}
        put: list[tuple[str, profiles.FieldSpec]] = []
        remove: list[str] = []
        replace = False
        paths = list(request.update_mask.paths) or [
            f"fields.{f.name}" for f in request.schema.fields
        ]
        for j, path in enumerate(paths):
            head, _, name = path.partition(".")
            if path == "fields":
                replace = True
                put = [
                    (f"schema.fields[{i}]", convert.schema_field(f))
                    for i, f in enumerate(request.schema.fields)
                ]
            elif head == "fields" and name:
                if name in given:
                    i, message = given[name]
                    put.append((f"schema.fields[{i}]", convert.schema_field(message)))
                else:
                    remove.append(name)
            else:
                raise InvalidArgument(
                    f"update_mask.paths[{j}] {path!r} cannot be updated (fields, fields.<name>)",
                    field=f"update_mask.paths[{j}]",
                )

        async def produce() -> profile_pb2.Schema:
            schema = await self.rt.call(
                profiles.update_schema,
                self.engine,
                account,
                put=put,
                remove=remove,
                replace=replace,
            )
            return convert.schema(account, schema)

        return await self.rt.idempotent("UpdateSchema", viewer, account, request, produce)

    # -- engagements ------------------------------------------------------------------------

    @guard_unary("RecordEngagement")
    async def RecordEngagement(
        self, request: profile_pb2.RecordEngagementRequest, context: aio.ServicerContext
    ) -> profile_pb2.Engagement:
        viewer = caller()
        account = convert.account(request.account)
        key = convert.required_contact(request, "contact")
        occurred = convert.optional_us(request, "occurred_at", "occurred_at", convert.now_us())
        if request.engagement_id:
            engagement_id = convert.parse_pid(request.engagement_id, "engagement_id")
        elif request.request_id:
            engagement_id = uuid.uuid5(
                _ENGAGEMENT_NAMESPACE, f"{account}\0{request.request_id}"
            ).bytes
        else:
            engagement_id = b""
        if len(request.attributes) > MAX_ENGAGEMENT_ATTRIBUTES:
            raise InvalidArgument(
                f"attributes has more than {MAX_ENGAGEMENT_ATTRIBUTES} entries", field="attributes"
            )
        for name, value in request.attributes.items():
            if len(name.encode()) + len(value.encode()) > MAX_ENGAGEMENT_ATTRIBUTE_BYTES:
                raise InvalidArgument(f"attributes.{name} is too long", field=f"attributes.{name}")
        who = actor(viewer, context)

        async def produce() -> profile_pb2.Engagement:
            state = await self.rt.call(
                self.engine.record_engagement,
                account,
                key,
                occurred_at_us=occurred,
                channel=request.channel,
                direction=request.direction,
                summary=request.summary,
                attributes=dict(request.attributes),
                engagement_id=engagement_id,
                actor=who,
            )
            return convert.engagement(state, viewer)

        # The engagement id comes from the request id, so a retry finds the stored
        # engagement by itself: only the request's digest is kept, to refuse the
        # same request id with a different engagement.
        return await self.rt.idempotent(
            "RecordEngagement", viewer, account, request, produce, keep_answer=False
        )

    @guard_unary("ListJourney")
    async def ListJourney(
        self, request: profile_pb2.ListJourneyRequest, context: aio.ServicerContext
    ) -> profile_pb2.ListJourneyResponse:
        viewer = caller()
        account = convert.account(request.account)
        pid = convert.parse_pid(request.customer_pid, "customer_pid")
        customer, page, token = await self.rt.call(
            self.engine.list_journey,
            account,
            pid,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return profile_pb2.ListJourneyResponse(
            engagements=[convert.engagement(e, viewer) for e in page],
            next_page_token=token,
            customer_pid=convert.pid_str(customer.pid),
        )

    @guard_unary("RelinkEngagement")
    async def RelinkEngagement(
        self, request: profile_pb2.RelinkEngagementRequest, context: aio.ServicerContext
    ) -> profile_pb2.Engagement:
        viewer = caller()
        account = convert.account(request.account)
        engagement_id = convert.parse_pid(request.engagement_id, "engagement_id")
        pid = convert.parse_pid(request.customer_pid, "customer_pid")
        who = actor(viewer, context)

        async def produce() -> profile_pb2.Engagement:
            state = await self.rt.call(
                self.engine.relink_engagement, account, engagement_id, pid, who
            )
            return convert.engagement(state, viewer)

        return await self.rt.idempotent("RelinkEngagement", viewer, account, request, produce)

    # -- change feed -------------------------------------------------------------------------

    @guard_stream("WatchChanges")
    async def WatchChanges(
        self, request: profile_pb2.WatchChangesRequest, context: aio.ServicerContext
    ) -> AsyncIterator[profile_pb2.WatchChangesResponse]:
        account = convert.account(request.account)
        after = request.after_seq
        stopping = asyncio.ensure_future(self.rt.stopping.wait())
        try:
            while not self.rt.stopping.is_set():
                # Take the wake-up event before reading, so a commit in between is not missed.
                woken = self.rt.notifier.event
                events = await self.rt.call(self.engine.changes_after, account, after, WATCH_BATCH)
                if events:
                    after = events[-1].seq
                    yield profile_pb2.WatchChangesResponse(
                        events=[convert.change_event(e) for e in events]
                    )
                    continue
                waiter = asyncio.ensure_future(woken.wait())
                try:
                    await asyncio.wait(
                        {waiter, stopping},
                        timeout=WATCH_POLL_SECONDS,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
