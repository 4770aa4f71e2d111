"""DeviceService: which users a device is assigned to, at which access level."""

from __future__ import annotations

from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.store import assignments as assignment_store

_ACCESS_TO_PB = {
    "view": devices_pb2.ACCESS_LEVEL_VIEW,
    "operate": devices_pb2.ACCESS_LEVEL_OPERATE,
    "manage": devices_pb2.ACCESS_LEVEL_MANAGE,
}

_ACCESS_FROM_PB = {v: k for k, v in _ACCESS_TO_PB.items()}


def _assignment_pb(assignment: assignment_store.Assignment) -> devices_pb2.DeviceAssignment:
    return devices_pb2.DeviceAssignment(
        device_id=str(assignment.device_id),
        user_id=str(assignment.user_id),
        user_email=assignment.user_email,
        access_level=_ACCESS_TO_PB[assignment.access_level],
        assigned_by=str(assignment.assigned_by) if assignment.assigned_by else "",
        assign_time=timestamp(assignment.assigned_at),
    )


class AssignmentRpcs(DeviceRpcs):
    """Assign, unassign and list assignments."""

    async def AssignDevice(
        self, request: devices_pb2.AssignDeviceRequest, context: Any
    ) -> devices_pb2.AssignDeviceResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        user_id = parse_uuid(errors, "user_id", request.user_id)
        level = "view"
        if request.access_level != devices_pb2.ACCESS_LEVEL_UNSPECIFIED:
            level = _ACCESS_FROM_PB.get(request.access_level, "")
            if not level:
                errors.add("access_level", "unknown access level")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id, DeviceAction.ASSIGN)
            assignment = await assignment_store.assign(
                conn, device_id, device.client_id, user_id, level, principal.user_id
            )
        return devices_pb2.AssignDeviceResponse(assignment=_assignment_pb(assignment))

    async def UnassignDevice(
        self, request: devices_pb2.UnassignDeviceRequest, context: Any
    ) -> devices_pb2.UnassignDeviceResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        user_id = parse_uuid(errors, "user_id", request.user_id)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id, DeviceAction.ASSIGN)
            if not await assignment_store.unassign(conn, device_id, user_id):
                raise NotFound("assignment not found")
        return devices_pb2.UnassignDeviceResponse()

    async def ListDeviceAssignments(
        self, request: devices_pb2.ListDeviceAssignmentsRequest, context: Any
    ) -> devices_pb2.ListDeviceAssignmentsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        after = parse_uuid(errors, "page_token", key[0]) if key else None
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await assignment_store.list_assignments(
                conn, device_id, after=after, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceAssignmentsResponse(
            assignments=[_assignment_pb(a) for a in page],
            next_page_token=encode_page_token([str(page[-1].user_id)]) if more else "",
        )
