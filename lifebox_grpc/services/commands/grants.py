"""CommandService: users' command grants, with hierarchical delegation.

Who may grant: staff anything (to a user of any tenant); a client administrator (holding
commands.delegate) anything within the tenant; anybody else only through a live grant of
theirs with can_delegate that covers the new one (same permission, same or wider device
scope, expiring no earlier), to a user of their own tenant; the new grant hangs below it, so
revoking it revokes the new one too. Who may revoke: staff, the tenant's administrator, and
whoever made the grant or holds one it was delegated from.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from lifebox.v1 import commands_pb2
from lifebox_grpc.auth.permissions import COMMANDS_DELEGATE
from lifebox_grpc.auth.principal import CLIENT, Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, InvalidArgument, NotFound, PermissionDenied
from lifebox_grpc.services.commands.base import CommandRpcs
from lifebox_grpc.services.commands.mapping import grant_pb
from lifebox_grpc.services.common import page_size, parse_uuid, require_uuid, scoped
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import command_grants as grant_store
from lifebox_grpc.store import command_templates as template_store


def _administers(principal: Principal) -> bool:
    """Staff, or the tenant's own administrator holding commands.delegate."""
    return principal.is_staff or (principal.role == CLIENT and principal.has(COMMANDS_DELEGATE))


async def _user_client(conn: asyncpg.Connection, user_id: uuid.UUID) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT client_id FROM users WHERE id = $1 AND client_id IS NOT NULL", user_id
    )
    return found


async def _device_client(conn: asyncpg.Connection, device_id: uuid.UUID) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT client_id FROM devices WHERE id = $1", device_id
    )
    return found


class GrantRpcs(CommandRpcs):
    """Grant, list and revoke command grants."""

    async def GrantCommandPermission(
        self, request: commands_pb2.GrantCommandPermissionRequest, context: Any
    ) -> commands_pb2.GrantCommandPermissionResponse:
        principal = require_principal()
        errors = ErrorCollector()
        user_id = parse_uuid(errors, "user_id", request.user_id)
        device_id = parse_uuid(errors, "device_id", request.device_id, required=False)
        if not request.command_permission:
            errors.add("command_permission", "required")
        expires = (
            request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
        )
        if expires is not None and expires <= datetime.now(UTC):
            errors.add("expire_time", "must be in the future")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            client_id = await _user_client(conn, user_id)
            if client_id is None:
                raise NotFound("user not found")
            if device_id is not None and await _device_client(conn, device_id) != client_id:
                raise NotFound("device not found")
            if not await template_store.permission_codes(conn, [request.command_permission]):
                raise InvalidArgument.field("command_permission", "is not a command permission")
            parent = None
            if not _administers(principal):
                parent = await grant_store.delegable_grant(
                    conn, principal.user_id, request.command_permission, device_id, expires
                )
                if parent is None:
                    raise PermissionDenied(
                        f"granting {request.command_permission!r} takes a live grant of it "
                        "with can_delegate on the same or a wider device scope, expiring no "
                        "earlier than the new one",
                        metadata={"command_permission": request.command_permission},
                    )
            grant = await grant_store.create_grant(
                conn,
                grant_store.NewGrant(
                    client_id=client_id,
                    user_id=user_id,
                    command_permission=request.command_permission,
                    device_id=device_id,
                    can_delegate=request.can_delegate,
                    granted_by=principal.user_id,
                    parent_grant_id=parent.id if parent else None,
                    expires_at=expires,
                ),
            )
        return commands_pb2.GrantCommandPermissionResponse(grant=grant_pb(grant))

    async def ListCommandGrants(
        self, request: commands_pb2.ListCommandGrantsRequest, context: Any
    ) -> commands_pb2.ListCommandGrantsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        user_id = parse_uuid(errors, "user_id", request.user_id, required=False)
        device_id = parse_uuid(errors, "device_id", request.device_id, required=False)
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await grant_store.list_grants(
                conn,
                principal.client_id,
                involving=None if _administers(principal) else principal.user_id,
                user_id=user_id,
                device_id=device_id,
                show_revoked=request.show_revoked,
                after=after,
                limit=size + 1,
            )
        page, token = time_id_page(rows, size, lambda g: g.granted_at)
        return commands_pb2.ListCommandGrantsResponse(
            grants=[grant_pb(g) for g in page], next_page_token=token
        )

    async def RevokeCommandGrant(
        self, request: commands_pb2.RevokeCommandGrantRequest, context: Any
    ) -> commands_pb2.RevokeCommandGrantResponse:
        principal = require_principal()
        grant_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            grant = await grant_store.get_grant(conn, grant_id, principal.client_id)
            if grant is None:
                raise NotFound("grant not found")
            if not _administers(principal) and not await grant_store.in_chain_above(
                conn, grant_id, principal.user_id
            ):
                if grant.user_id != principal.user_id:
                    raise NotFound("grant not found")
                raise PermissionDenied(
                    "a grant is revoked by whoever made it, holds one above it, or the "
                    "client's administrator"
                )
            count = await grant_store.revoke_grant(conn, grant_id, principal.user_id)
            revoked = await grant_store.get_grant(conn, grant_id, principal.client_id)
        assert revoked is not None
        return commands_pb2.RevokeCommandGrantResponse(grant=grant_pb(revoked), revoked_count=count)
