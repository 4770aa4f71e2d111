"""DeviceService: the hardware alarms devices report."""

from __future__ import annotations

from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.common import (
    page_size,
    parse_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.services.devices.mapping import struct_of
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import device_alarms as alarm_store


def _alarm_pb(alarm: alarm_store.DeviceAlarm) -> devices_pb2.DeviceAlarm:
    payload = alarm.payload if isinstance(alarm.payload, dict) else None
    if alarm.payload is not None and payload is None:
        payload = {"value": alarm.payload}
    return devices_pb2.DeviceAlarm(
        id=str(alarm.id),
        device_id=str(alarm.device_id),
        code=alarm.code,
        severity=alarm.severity,
        message=alarm.message or "",
        raise_time=timestamp(alarm.raised_at),
        clear_time=timestamp(alarm.cleared_at),
        payload=struct_of(payload),
    )


class AlarmRpcs(DeviceRpcs):
    """List and clear hardware alarms."""

    async def ListDeviceAlarms(
        self, request: devices_pb2.ListDeviceAlarmsRequest, context: Any
    ) -> devices_pb2.ListDeviceAlarmsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await alarm_store.list_alarms(
                conn, device_id, open_only=request.open_only, after=after, limit=size + 1
            )
        page, token = time_id_page(rows, size, lambda row: row.raised_at)
        return devices_pb2.ListDeviceAlarmsResponse(
            alarms=[_alarm_pb(a) for a in page], next_page_token=token
        )

    async def ClearDeviceAlarm(
        self, request: devices_pb2.ClearDeviceAlarmRequest, context: Any
    ) -> devices_pb2.ClearDeviceAlarmResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        alarm_id = parse_uuid(errors, "alarm_id", request.alarm_id)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id, DeviceAction.ACK_ALARMS)
            alarm = await alarm_store.clear_alarm(conn, device_id, alarm_id)
        if alarm is None:
            raise NotFound("alarm not found")
        return devices_pb2.ClearDeviceAlarmResponse(alarm=_alarm_pb(alarm))
