"""FileService: who may see and delete a file.

A file is seen by its owner; by every user of its tenant when its level is the tenant's
('client'); when attached to a page ('shared'), by whoever may see that page
(:func:`lifebox_grpc.services.dashboards.access.page_access`: the page's owner and live
shares); and always by the tenant's administrators (client role) and by staff. Anything else
reads NOT_FOUND. A file about a device is seen by operators and viewers only when that
device is assigned to them (or they uploaded it): a file level never widens device access.
Deleting takes files.write and the owner or an administrator.
"""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.auth.permissions import FILES_WRITE
from lifebox_grpc.auth.principal import CLIENT, Principal
from lifebox_grpc.errors import ErrorCollector, NotFound, PermissionDenied
from lifebox_grpc.services.common import parse_uuid
from lifebox_grpc.services.dashboards.access import page_access
from lifebox_grpc.services.device_access import ASSIGNED_ONLY_ROLES
from lifebox_grpc.store import files as file_store


def administers(principal: Principal) -> bool:
    """Sees (and may delete) every file of its scope."""
    return principal.is_staff or principal.role == CLIENT


def tenant_of(principal: Principal) -> uuid.UUID | None:
    """The tenant whose files the caller sees; None: every tenant (staff)."""
    return None if principal.is_staff else principal.client_id


def device_scope(principal: Principal) -> list[uuid.UUID] | None:
    """The devices whose files an operator or viewer may see; None: any device."""
    if principal.role in ASSIGNED_ONLY_ROLES:
        return list(principal.assigned_device_ids)
    return None


async def may_read(conn: asyncpg.Connection, principal: Principal, f: file_store.File) -> bool:
    if administers(principal) or f.owner_id == principal.user_id:
        return True
    devices = device_scope(principal)
    if f.device_id is not None and devices is not None and f.device_id not in devices:
        return False
    if f.access_level == "client":
        return True
    if f.access_level == "shared" and f.page_id is not None:
        return await page_access(conn, principal, f.page_id) is not None
    return False


async def require_file(
    conn: asyncpg.Connection, principal: Principal, file_id: uuid.UUID, *, delete: bool = False
) -> file_store.File:
    """The file, NOT_FOUND when the caller may not see it; for ``delete``,
    PERMISSION_DENIED unless it holds files.write and owns the file or administers it."""
    f = await file_store.get_file(conn, file_id, tenant_of(principal))
    if f is None or not await may_read(conn, principal, f):
        raise NotFound("file not found")
    if delete:
        principal.require(FILES_WRITE)
        if not (administers(principal) or f.owner_id == principal.user_id):
            raise PermissionDenied("only the file's owner or a client administrator deletes it")
    return f


def requested_tenant(
    principal: Principal, errors: ErrorCollector, field: str, value: str
) -> uuid.UUID | None:
    """The tenant a call acts on: the caller's own; staff name one in ``field`` (a
    violation when they do not)."""
    if not principal.is_staff:
        if value:
            errors.add(field, "only staff name a client")
        return principal.client_id
    client_id = parse_uuid(errors, field, value, required=True)
    return client_id if isinstance(client_id, uuid.UUID) else None
