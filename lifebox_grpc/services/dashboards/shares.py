"""DashboardService: sharing a page with users of its tenant, revoking, listing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound, PermissionDenied
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    scoped,
)
from lifebox_grpc.services.dashboards.access import PageRole, require_page
from lifebox_grpc.services.dashboards.base import DashboardRpcs
from lifebox_grpc.services.dashboards.mapping import SHARE_PERMISSIONS, share_pb
from lifebox_grpc.store import dashboards_shares as store


class ShareRpcs(DashboardRpcs):
    """Shares of pages."""

    async def SharePage(self, request: pb.SharePageRequest, context: Any) -> pb.SharePageResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page_id = parse_uuid(errors, "page_id", request.page_id)
        user_id = parse_uuid(errors, "user_id", request.user_id)
        permission = SHARE_PERMISSIONS.get(request.permission)
        if permission is None:
            errors.add("permission", "required: VIEW or EDIT")
        expires = None
        if request.HasField("expire_time"):
            expires = request.expire_time.ToDatetime(UTC)
            if expires <= datetime.now(UTC):
                errors.add("expire_time", "must be in the future")
        if user_id is not None and user_id == principal.user_id:
            errors.add("user_id", "the owner holds the page already")
        errors.raise_if_any()
        assert permission is not None
        async with scoped(self.pool, principal) as conn:
            access = await require_page(conn, principal, page_id, share=True)
            # Same tenant only (the foreign key says so too): anyone else is no such user.
            if not await store.tenant_user(conn, access.client_id, user_id):
                raise NotFound("user not found")
            share = await store.put_share(
                conn, access.client_id, page_id, user_id, permission, expires, principal.user_id
            )
        return pb.SharePageResponse(share=share_pb(share))

    async def RevokePageShare(
        self, request: pb.RevokePageShareRequest, context: Any
    ) -> pb.RevokePageShareResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page_id = parse_uuid(errors, "page_id", request.page_id)
        user_id = parse_uuid(errors, "user_id", request.user_id)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_page(conn, principal, page_id, share=True)
            if not await store.delete_share(conn, page_id, user_id):
                raise NotFound("the page is not shared with this user")
        return pb.RevokePageShareResponse()

    async def ListPageShares(
        self, request: pb.ListPageSharesRequest, context: Any
    ) -> pb.ListPageSharesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page_id = parse_uuid(errors, "page_id", request.page_id)
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        after = parse_uuid(errors, "page_token", key[0]) if key else None
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            access = await require_page(conn, principal, page_id)
            if access.role not in (PageRole.OWNER, PageRole.TENANT):
                raise PermissionDenied("who a page is shared with is for its owner to see")
            rows = await store.list_shares(conn, page_id, after=after, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        return pb.ListPageSharesResponse(
            shares=[share_pb(s) for s in page],
            next_page_token=encode_page_token([str(page[-1].user_id)]) if more else "",
        )
