"""Which devices a principal may see and what they may do to them, for every service.

Staff see every tenant's devices, a client administrator all of their client's, and
operators and viewers only the devices assigned to them (read per call with the principal).
A device outside that reads as NOT_FOUND, never PERMISSION_DENIED. On a device it may see, a
principal takes a :class:`~lifebox_grpc.auth.permissions.DeviceAction` when its role holds
the action's permission and, for operators and viewers, their assignment's access level
allows it (:data:`~lifebox_grpc.auth.permissions.DEVICE_ACTIONS`); else PERMISSION_DENIED.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Sequence

import asyncpg

from lifebox_grpc.auth.permissions import DEVICE_ACTIONS, AccessLevel, DeviceAction
from lifebox_grpc.auth.principal import OPERATOR, VIEWER, Principal
from lifebox_grpc.errors import ErrorCollector, NotFound, PermissionDenied
from lifebox_grpc.services.common import parse_uuid
from lifebox_grpc.store import assignments as assignment_store
from lifebox_grpc.store import devices as device_store

ASSIGNED_ONLY_ROLES = frozenset({OPERATOR, VIEWER})


def device_filter(principal: Principal) -> device_store.DeviceFilter:
    assigned = principal.assigned_device_ids if principal.role in ASSIGNED_ONLY_ROLES else None
    return device_store.DeviceFilter(principal.client_id, assigned, staff=principal.is_staff)


async def require_device(
    conn: asyncpg.Connection,
    principal: Principal,
    device_id: uuid.UUID,
    *actions: DeviceAction,
    lock: bool = False,
) -> device_store.Device:
    """The device, or NOT_FOUND when it does not exist or the principal may not see it; then
    PERMISSION_DENIED unless the principal may take every one of ``actions`` (none: read)
    on it. ``lock`` holds the device for update until the transaction ends."""
    device = await device_store.get_device(conn, device_id, device_filter(principal), lock=lock)
    if device is None:
        raise NotFound("device not found")
    await require_actions(conn, principal, [device_id], *actions)
    return device


async def require_actions(
    conn: asyncpg.Connection,
    principal: Principal,
    device_ids: Sequence[uuid.UUID],
    *actions: DeviceAction,
) -> None:
    """PERMISSION_DENIED unless the principal may take every one of ``actions`` on every one
    of ``device_ids``, which it must already have found in its scope (an operator's or
    viewer's device whose assignment is gone meanwhile reads NOT_FOUND)."""
    for action in actions:
        permission = DEVICE_ACTIONS[action].permission
        if permission is not None:
            principal.require(permission)
    if principal.role not in ASSIGNED_ONLY_ROLES or all(a is DeviceAction.READ for a in actions):
        return
    levels = await assignment_store.access_levels(conn, principal.user_id, device_ids)
    require_found(device_ids, levels)
    for device_id in device_ids:
        level = AccessLevel(levels[device_id])
        for action in actions:
            rule = DEVICE_ACTIONS[action]
            if rule.allows(level):
                continue
            needs = (
                f"an assignment with {rule.least_level.name}"
                if rule.least_level is not None
                else "a client administrator: no assignment level allows it"
            )
            raise PermissionDenied(
                f"your access to device {device_id} is {level.name}; to {rule.wording} "
                f"takes {needs}",
                metadata={
                    "device_id": str(device_id),
                    "access_level": level.name,
                    "action": action.value,
                },
            )


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
