"""Command reactions act with the permissions of the rule's owner (its creator), checked
by the same code as SendCommand when the rule is saved and again when it fires."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.auth.permissions import COMMANDS_SEND, DeviceAction
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.errors import NotFound, PermissionDenied
from lifebox_grpc.services.commands.access import require_sendable
from lifebox_grpc.services.device_access import ASSIGNED_ONLY_ROLES, require_device
from lifebox_grpc.store import users as user_store
from lifebox_grpc.store.command_templates import Template


async def authorize_command(
    conn: asyncpg.Connection,
    principal: Principal,
    template: Template,
    device_id: uuid.UUID | None,
) -> None:
    """PERMISSION_DENIED (or NOT_FOUND for a device out of its scope) unless ``principal``
    may send ``template`` to ``device_id``. None: a rule over many devices, which only a role
    that needs no per-device assignment or grant may give a command reaction (each device
    is checked again when the rule fires)."""
    if device_id is not None:
        await require_device(conn, principal, device_id, DeviceAction.SEND_COMMANDS)
        await require_sendable(conn, principal, device_id, template)
        return
    principal.require(COMMANDS_SEND)
    if principal.role in ASSIGNED_ONLY_ROLES:
        raise PermissionDenied(
            "a command reaction on a rule over many devices takes a client administrator: "
            "operators send commands only to devices assigned and granted to them"
        )
    # No assignment or grant is consulted for this role: only the template's role limit.
    await require_sendable(conn, principal, uuid.UUID(int=0), template)


async def owner_principal(
    conn: asyncpg.Connection, user_id: uuid.UUID | None, client_id: uuid.UUID
) -> Principal | None:
    """The rule owner as the database knows them now; None when deleted, disabled or moved
    to another tenant (its reactions' commands are then ``owner_missing``)."""
    if user_id is None:
        return None
    record = await user_store.principal_record(conn, user_id, client_id)
    if record is None or record.status != "active" or record.client_id != client_id:
        return None
    return Principal(
        user_id=record.user_id,
        email=record.email,
        role=record.role,
        client_id=record.client_id,
        permissions=record.permissions,
        assigned_device_ids=record.assigned_device_ids,
    )


async def owner_may_command(
    conn: asyncpg.Connection, principal: Principal, template: Template, device_id: uuid.UUID
) -> str | None:
    """Why the owner may not send this command when the rule fires (None: it may)."""
    try:
        await authorize_command(conn, principal, template, device_id)
    except (PermissionDenied, NotFound) as exc:
        return exc.message
    return None
