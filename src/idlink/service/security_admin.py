"""AdminService RPCs of SPEC 8: API keys, audit, security policy, erasure, export, retention.

Thin, like every servicer: validate, convert, call the security and domain
modules, convert back. Mixed into :class:`idlink.service.admin.AdminServicer`.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass
from typing import Any

from grpc import aio

from idlink.domain import access, erasure, retention
from idlink.domain.access import ApiKey, SecurityPolicy
from idlink.errors import InvalidArgument, PermissionDenied
from idlink.security.audit import AnomalyDetector, AuditFilter, AuditLog
from idlink.security.roles import ROLE_NAMES, caller
from idlink.service import convert, paging
from idlink.service.runtime import actor
from idlink.service.status import guard_unary
from idlink.v1 import admin_pb2

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_REGION_CHARS = 2
_SEQ = struct.Struct(">Q")  # an audit page token holds the last sequence number read


@dataclass(slots=True)
class Security:
    """The security machinery of one server: audit log and anomaly detector."""

    audit: AuditLog
    detector: AnomalyDetector


def api_key_message(state: ApiKey) -> admin_pb2.ApiKey:
    out = admin_pb2.ApiKey(
        key_id=state.key_id,
        account=state.account,
        role=state.role,  # type: ignore[arg-type]
        description=state.description,
        created_by=state.created_by,
        flagged=bool(state.flagged_at_us),
        flag_reason=state.flag_reason,
    )
    out.create_time.CopyFrom(convert.timestamp(state.created_at_us))
    if state.revoked_at_us:
        out.revoke_time.CopyFrom(convert.timestamp(state.revoked_at_us))
    return out


def policy_message(state: SecurityPolicy) -> admin_pb2.SecurityPolicy:
    return admin_pb2.SecurityPolicy(**dataclasses.asdict(state))


class SecurityAdminMixin:
    """The SPEC 8 part of AdminService."""

    rt: Any
    engine: Any
    security: Security

    @guard_unary("CreateApiKey")
    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        account = convert.account(request.account)
        role = ROLE_NAMES.get(request.role)
        if role is None:
            raise InvalidArgument("role is required", field="role")
        token, state = await self.rt.call(
            access.create_api_key,
            self.engine,
            account,
            role,
            description=request.description,
            created_by=caller().key_id,
        )
        return admin_pb2.CreateApiKeyResponse(key=api_key_message(state), token=token)

    @guard_unary("ListApiKeys")
    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        account = convert.account(request.account)
        page = paging.page_request(
            "api_keys", request, default=DEFAULT_PAGE, maximum=MAX_PAGE, bound_to=(account,)
        )
        after = page.after.decode(errors="replace")
        listed = await self.rt.call(access.list_api_keys, self.engine, account)
        keys, token = paging.paged(
            [k for k in listed if k.key_id > after], page, lambda k: k.key_id.encode()
        )
        return admin_pb2.ListApiKeysResponse(
            keys=[api_key_message(k) for k in keys], next_page_token=token
        )

    @guard_unary("RevokeApiKey")
    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: aio.ServicerContext
    ) -> admin_pb2.ApiKey:
        account = convert.account(request.account)
        state = await self.rt.call(access.revoke_api_key, self.engine, account, request.key_id)
        self.security.detector.forget(request.key_id)
        return api_key_message(state)

    @guard_unary("ClearKeyFlag")
    async def ClearKeyFlag(
        self, request: admin_pb2.ClearKeyFlagRequest, context: aio.ServicerContext
    ) -> admin_pb2.ApiKey:
        account = convert.account(request.account)
        state = await self.rt.call(access.clear_key_flag, self.engine, account, request.key_id)
        self.security.detector.forget(request.key_id)
        return api_key_message(state)

    @guard_unary("ListAuditEvents")
    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListAuditEventsResponse:
        account = convert.account(request.account)
        flt = AuditFilter(
            start_us=convert.optional_us(request, "start_time", "start_time", 0),
            end_us=convert.optional_us(request, "end_time", "end_time", 0),
            key_id=request.key_id,
            customer_pid=(
                convert.parse_pid(request.customer_pid, "customer_pid")
                if request.customer_pid
                else b""
            ),
        )

        # Bound to the account and the filter (AIP-158): another filter starts again.
        page = paging.page_request(
            "audit",
            request,
            default=DEFAULT_PAGE,
            maximum=MAX_PAGE,
            bound_to=(account, flt.start_us, flt.end_us, flt.key_id, flt.customer_pid),
            position_bytes=_SEQ.size,
        )
        after = _SEQ.unpack(page.after)[0] if page.after else 0

        def read() -> list[access.AuditEventState]:
            self.security.audit.flush()
            found, _ = access.list_audit_events(self.engine, account, flt, after, page.size + 1)
            return found

        events, token = paging.paged(
            await self.rt.call(read), page, lambda event: _SEQ.pack(event.seq)
        )
        response = admin_pb2.ListAuditEventsResponse(next_page_token=token)
        for event in events:
            response.events.add(
                seq=event.seq,
                time=convert.timestamp(event.at_us),
                key_id=event.key_id,
                role=event.role,
                method=event.method,
                customer_pids=convert.pid_strs(event.customer_pids),
                outcome=event.outcome,
                detail=event.detail,
            )
        return response

    @guard_unary("SetSecurityPolicy")
    async def SetSecurityPolicy(
        self, request: admin_pb2.SetSecurityPolicyRequest, context: aio.ServicerContext
    ) -> admin_pb2.SecurityPolicy:
        account = convert.account(request.account)
        given = request.policy
        region = given.default_region.upper()
        if region and (len(region) != MAX_REGION_CHARS or not region.isalpha()):
            raise InvalidArgument(
                "policy.default_region must be a two-letter region", field="policy.default_region"
            )
        for name in ("engagement_retention_seconds", "inactive_customer_retention_seconds"):
            if getattr(given, name) < 0:
                raise InvalidArgument(f"policy.{name} must not be negative", field=f"policy.{name}")
        fields = {f.name: getattr(given, f.name) for f in dataclasses.fields(SecurityPolicy)}
        policy = SecurityPolicy(**{**fields, "default_region": region})
        return policy_message(
            await self.rt.call(access.set_security_policy, self.engine, account, policy)
        )

    @guard_unary("GetSecurityPolicy")
    async def GetSecurityPolicy(
        self, request: admin_pb2.GetSecurityPolicyRequest, context: aio.ServicerContext
    ) -> admin_pb2.SecurityPolicy:
        account = convert.account(request.account)
        return policy_message(await self.rt.call(access.get_security_policy, self.engine, account))

    @guard_unary("EraseCustomer")
    async def EraseCustomer(
        self, request: admin_pb2.EraseCustomerRequest, context: aio.ServicerContext
    ) -> admin_pb2.EraseCustomerResponse:
        who = actor(caller(), context)
        account = convert.account(request.account)
        pid = convert.parse_pid(request.customer_pid, "customer_pid")
        try:
            result = await self.rt.call(erasure.erase_customer, self.engine, account, pid, who)
        finally:
            # No kept answer of a mutation may show the erased customer to a retry
            # (also when the erasure failed part way: a retry then simply runs again).
            self.rt.forget_account(account)
        return admin_pb2.EraseCustomerResponse(
            customer_pid=convert.pid_str(result.customer_pid),
            contacts_erased=result.contacts,
            records_deleted=result.records_deleted,
            records_changed=result.records_changed,
            engagements_erased=result.engagements,
        )

    @guard_unary("ExportCustomer")
    async def ExportCustomer(
        self, request: admin_pb2.ExportCustomerRequest, context: aio.ServicerContext
    ) -> admin_pb2.ExportCustomerResponse:
        viewer = caller()
        account = convert.account(request.account)
        pid = convert.parse_pid(request.customer_pid, "customer_pid")
        # An export holds every value in clear: only roles that see PII get one (fail closed).
        if not viewer.sees_pii:
            raise PermissionDenied(f"role {viewer.role_name or 'none'} may not export customers")
        data = await self.rt.call(erasure.export_customer, self.engine, account, pid)
        return admin_pb2.ExportCustomerResponse(
            customer_pid=data["customer_pid"],
            json=json.dumps(data, ensure_ascii=False, sort_keys=True),
        )

    @guard_unary("ApplyRetention")
    async def ApplyRetention(
        self, request: admin_pb2.ApplyRetentionRequest, context: aio.ServicerContext
    ) -> admin_pb2.ApplyRetentionResponse:
        account = convert.account(request.account)
        result = await self.rt.call(retention.apply_retention, self.engine, account)
        if result.customers_erased or result.engagements_deleted:
            self.rt.forget_account(account)
        return admin_pb2.ApplyRetentionResponse(
            engagements_deleted=result.engagements_deleted,
            customers_erased=result.customers_erased,
        )
