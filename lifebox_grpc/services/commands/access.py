"""CommandService: who may see a command, and who may send which command to which device.

A command is visible to whoever may see its device (staff: every tenant; a client
administrator: the client's; operators and viewers: their assigned devices); anything else
reads NOT_FOUND. Sending takes, in order: the device in scope (NOT_FOUND), the role's
commands.send and, for operators and viewers, an assignment with OPERATE or MANAGE
(:func:`~lifebox_grpc.services.device_access.require_device`); the command permission's role
limit, if any; for operators and viewers a live grant of the template's command permission on
the device or on every device; and, where the permission requires it, a confirmation.
"""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.errors import InvalidArgument, NotFound, PermissionDenied
from lifebox_grpc.services.device_access import ASSIGNED_ONLY_ROLES, device_filter
from lifebox_grpc.store import command_grants as grant_store
from lifebox_grpc.store import command_templates as template_store
from lifebox_grpc.store import commands as command_store


def command_scope(principal: Principal) -> tuple[uuid.UUID | None, list[uuid.UUID] | None]:
    """(client, devices) whose commands the principal sees; None: all of that level."""
    scope = device_filter(principal)
    return scope.client_id, scope.device_list


async def require_command(
    conn: asyncpg.Connection, principal: Principal, command_id: uuid.UUID, *, lock: bool = False
) -> command_store.Command:
    client_id, device_ids = command_scope(principal)
    command = await command_store.get_command(conn, command_id, client_id, device_ids, lock=lock)
    if command is None:
        raise NotFound("command not found")
    return command


async def require_sendable(
    conn: asyncpg.Connection,
    principal: Principal,
    device_id: uuid.UUID,
    template: template_store.Template,
    permission: template_store.Permission | None = None,
) -> template_store.Permission:
    """PERMISSION_DENIED unless the principal may send ``template`` to the device (already
    found in its scope, with SEND_COMMANDS checked); the template's command permission
    (``permission``, when the caller read it with the template)."""
    if permission is None:
        permission = await template_store.get_permission(conn, template.command_permission)
    assert permission is not None, "a template's permission always exists (foreign key)"
    if permission.allowed_roles and principal.role not in permission.allowed_roles:
        raise PermissionDenied(
            f"{permission.code} commands may be sent only by: "
            + ", ".join(permission.allowed_roles),
            metadata={"command_permission": permission.code},
        )
    if principal.role in ASSIGNED_ONLY_ROLES and not await grant_store.holds_grant(
        conn, principal.user_id, permission.code, device_id
    ):
        raise PermissionDenied(
            f"you hold no live grant of {permission.code!r} for this device",
            metadata={"command_permission": permission.code, "device_id": str(device_id)},
        )
    return permission


def require_confirmation(
    permission: template_store.Permission, confirmation: str, expected: str, field: str
) -> None:
    """INVALID_ARGUMENT unless a permission that requires confirmation got ``expected``."""
    if permission.requires_confirmation and confirmation != expected:
        raise InvalidArgument.field(
            field, f"{permission.code} commands need confirmation: set it to {expected!r}"
        )
