"""Which devices a principal may see, shared by DeviceService and TelemetryService.

Staff see every tenant's devices, a client administrator all of their client's, and
operators and viewers only the devices assigned to them (read per call with the principal).
A device outside that reads as NOT_FOUND, never PERMISSION_DENIED.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Sequence

import asyncpg

from lifebox_grpc.auth.principal import OPERATOR, VIEWER, Principal
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.common import parse_uuid
from lifebox_grpc.store import devices as device_store

ASSIGNED_ONLY_ROLES = frozenset({OPERATOR, VIEWER})


def device_filter(principal: Principal) -> device_store.DeviceFilter:
    assigned = principal.assigned_device_ids if principal.role in ASSIGNED_ONLY_ROLES else None
    return device_store.DeviceFilter(principal.client_id, assigned, staff=principal.is_staff)


async def require_device(
    conn: asyncpg.Connection, principal: Principal, device_id: uuid.UUID, *, lock: bool = False
) -> device_store.Device:
    """The device, or NOT_FOUND when it does not exist or the principal may not see it."""
    device = await device_store.get_device(conn, device_id, device_filter(principal), lock=lock)
    if device is None:
        raise NotFound("device not found")
    return device


def parse_device_ids(
    errors: ErrorCollector, field: str, values: Sequence[str], *, most: int
) -> list[uuid.UUID]:
    """Distinct device ids in request order; 1 to ``most`` of them."""
    if not values:
        errors.add(field, "name at least one device")
    elif len(values) > most:
        errors.add(field, f"at most {most} devices per call")
    ids: dict[uuid.UUID, None] = {}
    for i, value in enumerate(values[:most]):
        parsed = parse_uuid(errors, f"{field}[{i}]", value)
        if parsed is not None:
            ids[parsed] = None
    return list(ids)


async def require_devices(
    conn: asyncpg.Connection, principal: Principal, device_ids: Sequence[uuid.UUID]
) -> None:
    """NOT_FOUND unless the principal may see every one of ``device_ids``."""
    require_found(
        device_ids,
        await device_store.visible_device_ids(conn, device_ids, device_filter(principal)),
    )


def require_found(device_ids: Sequence[uuid.UUID], visible: Container[uuid.UUID]) -> None:
    """NOT_FOUND naming the first of ``device_ids`` that is not ``visible``."""
    missing = [d for d in device_ids if d not in visible]
    if missing:
        raise NotFound(f"device not found: {missing[0]}")
