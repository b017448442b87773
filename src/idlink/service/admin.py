"""AdminService: key types, account policy, isolated contacts (SPEC 2.4, 2.5, 3.3). Thin."""

from __future__ import annotations

from grpc import aio

from idlink.errors import InvalidArgument
from idlink.security.roles import caller
from idlink.service import convert, paging
from idlink.service.runtime import Runtime, actor
from idlink.service.security_admin import SecurityAdminMixin
from idlink.service.status import guard_unary
from idlink.v1 import admin_pb2, admin_pb2_grpc, common_pb2

MAX_KEY_TYPES_PAGE = 64
DEFAULT_ISOLATED_PAGE = 100
MAX_ISOLATED_PAGE = 1000


class AdminServicer(SecurityAdminMixin, admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.engine = runtime.engine

    @guard_unary("PutKeyType")
    async def PutKeyType(
        self, request: admin_pb2.PutKeyTypeRequest, context: aio.ServicerContext
    ) -> common_pb2.KeyType:
        viewer = caller()
        account = convert.account(request.account)
        if not request.HasField("key_type"):
            raise InvalidArgument("key_type is required", field="key_type")
        key_type = convert.key_type(request.key_type)
        who = actor(viewer, context)

        async def produce() -> common_pb2.KeyType:
            stored = await self.rt.call(self.engine.put_key_type, account, key_type, who)
            return convert.key_type_message(stored)

        return await self.rt.idempotent("PutKeyType", viewer, account, request, produce)

    @guard_unary("ListKeyTypes")
    async def ListKeyTypes(
        self, request: admin_pb2.ListKeyTypesRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListKeyTypesResponse:
        account = convert.account(request.account)
        page = paging.page_request(
            "key_types",
            request,
            default=MAX_KEY_TYPES_PAGE,
            maximum=MAX_KEY_TYPES_PAGE,
            bound_to=(account,),
        )
        after = page.after.decode(errors="replace")
        config = await self.rt.call(self.engine.account_config, account)
        names, token = paging.paged(
            [name for name in sorted(config.key_types) if name > after], page, str.encode
        )
        return admin_pb2.ListKeyTypesResponse(
            key_types=[convert.key_type_message(config.key_types[n]) for n in names],
            next_page_token=token,
        )

    @guard_unary("SetAccountPolicy")
    async def SetAccountPolicy(
        self, request: admin_pb2.SetAccountPolicyRequest, context: aio.ServicerContext
    ) -> common_pb2.AccountPolicy:
        viewer = caller()
        account = convert.account(request.account)
        policy = convert.account_policy(request.policy)
        who = actor(viewer, context)

        async def produce() -> common_pb2.AccountPolicy:
            stored = await self.rt.call(self.engine.set_account_policy, account, policy, who)
            return convert.account_policy_message(stored)

        return await self.rt.idempotent("SetAccountPolicy", viewer, account, request, produce)

    @guard_unary("GetAccountPolicy")
    async def GetAccountPolicy(
        self, request: admin_pb2.GetAccountPolicyRequest, context: aio.ServicerContext
    ) -> common_pb2.AccountPolicy:
        account = convert.account(request.account)
        config = await self.rt.call(self.engine.account_config, account)
        return convert.account_policy_message(config.policy)

    @guard_unary("ListIsolatedContacts")
    async def ListIsolatedContacts(
        self, request: admin_pb2.ListIsolatedContactsRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListIsolatedContactsResponse:
        viewer = caller()
        account = convert.account(request.account)
        page = paging.page_request(
            "isolated",
            request,
            default=DEFAULT_ISOLATED_PAGE,
            maximum=MAX_ISOLATED_PAGE,
            bound_to=(account,),
            position_bytes=16,  # a contact PID
        )
        found = await self.rt.call(self.engine.list_isolated, account, page.after, page.size + 1)
        contacts, token = paging.paged(found, page, lambda contact: contact.pid)
        return admin_pb2.ListIsolatedContactsResponse(
            contacts=[convert.contact(c, viewer) for c in contacts], next_page_token=token
        )
