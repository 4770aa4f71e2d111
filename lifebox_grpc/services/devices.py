"""DeviceService: the device registry, metadata history and snapshots, locations,
assignments and hardware alarms. Validation and mapping only; the SQL is in the stores."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf import json_format, struct_pb2

from lifebox.v1 import devices_pb2, devices_pb2_grpc
from lifebox_grpc.auth.permissions import ALARMS_ACK, DEVICES_WRITE
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ErrorCollector, FieldViolation, InvalidArgument, NotFound
from lifebox_grpc.serials import is_valid_serial
from lifebox_grpc.services.common import (
    check_text,
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.services.device_access import device_filter, require_device
from lifebox_grpc.store import assignments as assignment_store
from lifebox_grpc.store import device_alarms as alarm_store
from lifebox_grpc.store import devices as device_store
from lifebox_grpc.store import locations as location_store
from lifebox_grpc.store import snapshots as snapshot_store
from lifebox_grpc.store.pool import savepoint

log = logging.getLogger(__name__)

MAX_NAME = 200
MAX_SHORT_TEXT = 100
MAX_REASON = 500
MAX_METADATA_BYTES = 16_384
MAX_INTERVAL_S = 7 * 86_400
MAX_BATCH = 10_000
_DEVICE_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEVICE_MASK_FIELDS = (
    "name",
    "device_type",
    "model",
    "firmware_version",
    "status",
    "expected_interval_seconds",
    "metadata",
)

_STATUS_TO_PB = {
    "provisioned": devices_pb2.DEVICE_STATUS_PROVISIONED,
    "active": devices_pb2.DEVICE_STATUS_ACTIVE,
    "disabled": devices_pb2.DEVICE_STATUS_DISABLED,
    "decommissioned": devices_pb2.DEVICE_STATUS_DECOMMISSIONED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_SOURCE_TO_PB = {
    "gps": devices_pb2.LOCATION_SOURCE_GPS,
    "network": devices_pb2.LOCATION_SOURCE_NETWORK,
    "manual": devices_pb2.LOCATION_SOURCE_MANUAL,
    "telemetry": devices_pb2.LOCATION_SOURCE_TELEMETRY,
}
_SOURCE_FROM_PB = {v: k for k, v in _SOURCE_TO_PB.items()}
_ACCESS_TO_PB = {
    "view": devices_pb2.ACCESS_LEVEL_VIEW,
    "operate": devices_pb2.ACCESS_LEVEL_OPERATE,
    "manage": devices_pb2.ACCESS_LEVEL_MANAGE,
}
_ACCESS_FROM_PB = {v: k for k, v in _ACCESS_TO_PB.items()}


# -- mapping ------------------------------------------------------------------------------


def struct_of(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _value_of(value: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(value, out)
    return out


def location_pb(location: device_store.Location) -> devices_pb2.DeviceLocation:
    out = devices_pb2.DeviceLocation(
        time=timestamp(location.time),
        latitude=location.latitude,
        longitude=location.longitude,
        source=_SOURCE_TO_PB.get(location.source, devices_pb2.LOCATION_SOURCE_UNSPECIFIED),
    )
    if location.altitude_m is not None:
        out.altitude_m = location.altitude_m
    if location.accuracy_m is not None:
        out.accuracy_m = location.accuracy_m
    return out


def device_pb(device: device_store.Device) -> devices_pb2.Device:
    return devices_pb2.Device(
        id=str(device.id),
        client_id=str(device.client_id),
        serial=device.serial,
        name=device.name,
        device_type=device.device_type,
        model=device.model or "",
        firmware_version=device.firmware_version or "",
        status=_STATUS_TO_PB.get(device.status, devices_pb2.DEVICE_STATUS_UNSPECIFIED),
        expected_interval_seconds=device.expected_interval_s,
        last_seen_time=timestamp(device.last_seen_at),
        online=device.online,
        metadata=struct_of(device.metadata),
        latest_location=location_pb(device.latest_location) if device.latest_location else None,
        create_time=timestamp(device.created_at),
        update_time=timestamp(device.updated_at),
        decommission_time=timestamp(device.decommissioned_at),
    )


def _snapshot_pb(snapshot: snapshot_store.Snapshot) -> devices_pb2.DeviceSnapshot:
    return devices_pb2.DeviceSnapshot(
        id=str(snapshot.id),
        device_id=str(snapshot.device_id),
        reason=snapshot.reason,
        metadata=struct_of(snapshot.metadata),
        firmware_version=snapshot.firmware_version or "",
        taken_by=str(snapshot.taken_by) if snapshot.taken_by else "",
        create_time=timestamp(snapshot.taken_at),
    )


def _assignment_pb(assignment: assignment_store.Assignment) -> devices_pb2.DeviceAssignment:
    return devices_pb2.DeviceAssignment(
        device_id=str(assignment.device_id),
        user_id=str(assignment.user_id),
        user_email=assignment.user_email,
        access_level=_ACCESS_TO_PB[assignment.access_level],
        assigned_by=str(assignment.assigned_by) if assignment.assigned_by else "",
        assign_time=timestamp(assignment.assigned_at),
    )


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


def _history_pb(entry: device_store.HistoryEntry) -> devices_pb2.DeviceHistoryEntry:
    return devices_pb2.DeviceHistoryEntry(
        id=str(entry.id),
        changed_by=str(entry.changed_by) if entry.changed_by else "",
        path=entry.path,
        old_value=_value_of(entry.old_value),
        new_value=_value_of(entry.new_value),
        change_time=timestamp(entry.changed_at),
    )


# -- validation ---------------------------------------------------------------------------


def _metadata_of(errors: ErrorCollector, field: str, value: struct_pb2.Struct) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(value)
    for key in data:
        if not _METADATA_KEY.match(key):
            errors.add(field, f"key {key[:70]!r}: 1-64 letters, digits, '_' or '-'")
    if len(json.dumps(data)) > MAX_METADATA_BYTES:
        errors.add(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return data


def _check_serial(errors: ErrorCollector, field: str, serial: str) -> None:
    if not serial:
        errors.add(field, "required")
    elif not is_valid_serial(serial):  # the CHECK on devices.serial: one MQTT topic level
        errors.add(field, "1-64 letters, digits, '_', '.', ':' or '-', starting alphanumeric")


def _check_type(errors: ErrorCollector, field: str, device_type: str) -> None:
    if not _DEVICE_TYPE.match(device_type):
        errors.add(field, "1-64 lowercase letters, digits, '_' or '-'")


def _check_interval(errors: ErrorCollector, field: str, seconds: int) -> None:
    if not 1 <= seconds <= MAX_INTERVAL_S:
        errors.add(field, f"must be 1 to {MAX_INTERVAL_S} seconds")


def _optional_text(errors: ErrorCollector, field: str, value: str) -> str | None:
    check_text(errors, field, value, max_length=MAX_SHORT_TEXT, required=False)
    return value or None


class DeviceServicer(devices_pb2_grpc.DeviceServiceServicer):
    """The DeviceService handlers."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    def _default_interval(self, device_type: str) -> int:
        return self.settings.device_type_intervals.get(
            device_type, self.settings.device_default_interval_seconds
        )

    def _new_device(self, errors: ErrorCollector, prefix: str, d: devices_pb2.Device) -> Any:
        """The validated NewDevice of ``d``; None (with violations recorded) when invalid."""
        before = len(errors.violations)
        _check_serial(errors, f"{prefix}serial", d.serial)
        check_text(errors, f"{prefix}name", d.name, max_length=MAX_NAME)
        device_type = d.device_type or "generic"
        _check_type(errors, f"{prefix}device_type", device_type)
        model = _optional_text(errors, f"{prefix}model", d.model)
        firmware = _optional_text(errors, f"{prefix}firmware_version", d.firmware_version)
        status = "provisioned"
        if d.status != devices_pb2.DEVICE_STATUS_UNSPECIFIED:
            status = _STATUS_FROM_PB.get(d.status, "")
            if status not in ("provisioned", "active"):
                errors.add(f"{prefix}status", "a new device is PROVISIONED or ACTIVE")
        interval = d.expected_interval_seconds or self._default_interval(device_type)
        _check_interval(errors, f"{prefix}expected_interval_seconds", interval)
        metadata = _metadata_of(errors, f"{prefix}metadata", d.metadata)
        if len(errors.violations) > before:
            return None
        return device_store.NewDevice(
            d.serial, d.name, device_type, model, firmware, status, interval, metadata
        )

    @staticmethod
    def _target_client(errors: ErrorCollector, principal: Principal, value: str) -> Any:
        if principal.client_id is not None:
            return principal.client_id
        return parse_uuid(errors, "client_id", value)

    async def CreateDevice(
        self, request: devices_pb2.CreateDeviceRequest, context: Any
    ) -> devices_pb2.CreateDeviceResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = self._target_client(errors, principal, request.client_id)
        new = self._new_device(errors, "device.", request.device)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            created = await device_store.create_device(conn, client_id, new)
        log.info("device created", extra={"device_id": str(created.id), "by": principal.describe()})
        return devices_pb2.CreateDeviceResponse(device=device_pb(created))

    async def GetDevice(
        self, request: devices_pb2.GetDeviceRequest, context: Any
    ) -> devices_pb2.GetDeviceResponse:
        principal = require_principal()
        device_id = require_uuid("id", request.id)
        async with self.pool.acquire() as conn:  # one statement that scopes itself
            device = await require_device(conn, principal, device_id)
        return devices_pb2.GetDeviceResponse(device=device_pb(device))

    async def ListDevices(
        self, request: devices_pb2.ListDevicesRequest, context: Any
    ) -> devices_pb2.ListDevicesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        status = None
        if request.status != devices_pb2.DEVICE_STATUS_UNSPECIFIED:
            status = _STATUS_FROM_PB.get(request.status)
            if status is None:
                errors.add("status", "unknown status")
        if request.device_type:
            _check_type(errors, "device_type", request.device_type)
        check_text(errors, "search", request.search, max_length=MAX_NAME, required=False)
        scope = device_filter(principal)
        if request.client_id:
            client = parse_uuid(errors, "client_id", request.client_id)
            if principal.client_id is None:
                scope = dataclasses.replace(scope, client_id=client)
            elif client is not None and client != principal.client_id:
                errors.add("client_id", "only platform staff choose the client")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await device_store.list_devices(
                conn,
                scope,
                status=status,
                device_type=request.device_type or None,
                search=request.search or None,
                after_serial=key[0] if key else None,
                limit=size + 1,
            )
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDevicesResponse(
            devices=[device_pb(d) for d in page],
            next_page_token=encode_page_token([page[-1].serial]) if more else "",
        )

    async def UpdateDevice(
        self, request: devices_pb2.UpdateDeviceRequest, context: Any
    ) -> devices_pb2.UpdateDeviceResponse:
        principal = require_principal()
        errors = ErrorCollector()
        new = request.device
        device_id = parse_uuid(errors, "device.id", new.id)
        plain, keys = _device_mask(errors, request.update_mask.paths)
        changes: dict[str, object] = {}
        if "name" in plain:
            check_text(errors, "device.name", new.name, max_length=MAX_NAME)
            changes["name"] = new.name
        if "device_type" in plain:
            _check_type(errors, "device.device_type", new.device_type)
            changes["device_type"] = new.device_type
        if "model" in plain:
            changes["model"] = _optional_text(errors, "device.model", new.model)
        if "firmware_version" in plain:
            changes["firmware_version"] = _optional_text(
                errors, "device.firmware_version", new.firmware_version
            )
        if "status" in plain:
            status = _STATUS_FROM_PB.get(new.status)
            if status is None:
                errors.add(
                    "device.status", "must be PROVISIONED, ACTIVE, DISABLED or DECOMMISSIONED"
                )
            changes["status"] = status
        if "expected_interval_seconds" in plain:
            _check_interval(
                errors, "device.expected_interval_seconds", new.expected_interval_seconds
            )
            changes["expected_interval_s"] = new.expected_interval_seconds
        metadata = _metadata_of(errors, "device.metadata", new.metadata)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id, lock=True)
            principal.require(DEVICES_WRITE)
            if changes.get("status") == "decommissioned" and device.status != "decommissioned":
                changes["decommissioned_at"] = datetime.now(UTC)
            elif "status" in changes and changes["status"] != "decommissioned":
                changes["decommissioned_at"] = None
            new_metadata = None
            if "metadata" in plain:
                new_metadata = metadata
            elif keys:
                new_metadata = dict(device.metadata)
                for key in keys:
                    if key in metadata:
                        new_metadata[key] = metadata[key]
                    else:
                        new_metadata.pop(key, None)
            if len(json.dumps(new_metadata or {})) > MAX_METADATA_BYTES:
                raise InvalidArgument.field(
                    "device.metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON"
                )
            await device_store.apply_update(conn, device, changes, new_metadata, principal.user_id)
            updated = await require_device(conn, principal, device_id)
        return devices_pb2.UpdateDeviceResponse(device=device_pb(updated))

    async def DeleteDevice(
        self, request: devices_pb2.DeleteDeviceRequest, context: Any
    ) -> devices_pb2.DeleteDeviceResponse:
        principal = require_principal()
        device_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id, lock=True)
            principal.require(DEVICES_WRITE)
            if request.hard:
                removed = await device_store.hard_delete(conn, device_id)
                log.warning(
                    "device deleted",
                    extra={"device_id": str(device_id), "by": principal.describe()},
                )
                return devices_pb2.DeleteDeviceResponse(
                    device=device_pb(device),
                    deleted=True,
                    removed=devices_pb2.DeletedCounts(**removed.__dict__),
                )
            if device.status != "decommissioned":
                await device_store.apply_update(
                    conn,
                    device,
                    {"status": "decommissioned", "decommissioned_at": datetime.now(UTC)},
                    None,
                    principal.user_id,
                )
            device = await require_device(conn, principal, device_id)
        return devices_pb2.DeleteDeviceResponse(device=device_pb(device), deleted=False)

    async def BatchCreateDevices(
        self, request: devices_pb2.BatchCreateDevicesRequest, context: Any
    ) -> devices_pb2.BatchCreateDevicesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = self._target_client(errors, principal, request.client_id)
        if not request.devices:
            errors.add("devices", "name at least one device")
        elif len(request.devices) > MAX_BATCH:
            errors.add("devices", f"at most {MAX_BATCH} devices per call")
        errors.raise_if_any()
        results = [devices_pb2.BatchCreateResult(index=i) for i in range(len(request.devices))]
        valid: dict[int, device_store.NewDevice] = {}
        seen: dict[str, int] = {}
        for i, row in enumerate(request.devices):
            row_errors = ErrorCollector()
            new = self._new_device(row_errors, "", row)
            if new is not None and new.serial in seen:
                row_errors.add("serial", f"repeats the serial of row {seen[new.serial]}")
            if row_errors.violations:
                _fail(results[i], "INVALID_ARGUMENT", "invalid row", row_errors.violations)
            else:
                valid[i] = new
                seen[new.serial] = i
        all_or_nothing = request.all_or_nothing
        created: dict[str, device_store.Device] = {}
        if valid and not (all_or_nothing and len(valid) < len(results)):
            async with scoped(self.pool, principal) as conn:
                try:
                    async with savepoint(conn):
                        created = await device_store.create_devices(
                            conn, client_id, list(valid.values())
                        )
                        if all_or_nothing and len(created) < len(valid):
                            raise _RollBack
                except _RollBack:
                    taken = [s for s in seen if s not in created]
                    created = {}
                    for serial in taken:
                        _fail(results[seen[serial]], "ALREADY_EXISTS", "serial already exists")
        for i, new in valid.items():
            device = created.get(new.serial)
            if device is not None:
                results[i].device.CopyFrom(device_pb(device))
            elif not results[i].error_code:
                if all_or_nothing:
                    _fail(results[i], "ABORTED", "not created: another row failed")
                else:
                    _fail(results[i], "ALREADY_EXISTS", "serial already exists")
        log.info(
            "devices batch-created",
            extra={"count": len(created), "rows": len(results), "by": principal.describe()},
        )
        return devices_pb2.BatchCreateDevicesResponse(results=results, created_count=len(created))

    async def ListDeviceHistory(
        self, request: devices_pb2.ListDeviceHistoryRequest, context: Any
    ) -> devices_pb2.ListDeviceHistoryResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        after = _time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await device_store.list_history(conn, device_id, after=after, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceHistoryResponse(
            entries=[_history_pb(e) for e in page],
            next_page_token=_time_id_token(page[-1].changed_at, page[-1].id) if more else "",
        )

    async def CreateDeviceSnapshot(
        self, request: devices_pb2.CreateDeviceSnapshotRequest, context: Any
    ) -> devices_pb2.CreateDeviceSnapshotResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        check_text(errors, "reason", request.reason, max_length=MAX_REASON)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            principal.require(DEVICES_WRITE)
            snapshot = await snapshot_store.create_snapshot(
                conn, device_id, request.reason, principal.user_id
            )
        return devices_pb2.CreateDeviceSnapshotResponse(snapshot=_snapshot_pb(snapshot))

    async def ListDeviceSnapshots(
        self, request: devices_pb2.ListDeviceSnapshotsRequest, context: Any
    ) -> devices_pb2.ListDeviceSnapshotsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        after = _time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await snapshot_store.list_snapshots(conn, device_id, after=after, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceSnapshotsResponse(
            snapshots=[_snapshot_pb(s) for s in page],
            next_page_token=_time_id_token(page[-1].taken_at, page[-1].id) if more else "",
        )

    async def RestoreDeviceSnapshot(
        self, request: devices_pb2.RestoreDeviceSnapshotRequest, context: Any
    ) -> devices_pb2.RestoreDeviceSnapshotResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        snapshot_id = parse_uuid(errors, "snapshot_id", request.snapshot_id)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id, lock=True)
            principal.require(DEVICES_WRITE)
            snapshot = await snapshot_store.get_snapshot(conn, device_id, snapshot_id)
            if snapshot is None:
                raise NotFound("snapshot not found")
            await device_store.apply_update(
                conn,
                device,
                {"firmware_version": snapshot.firmware_version},
                snapshot.metadata,
                principal.user_id,
            )
            restored = await require_device(conn, principal, device_id)
        return devices_pb2.RestoreDeviceSnapshotResponse(device=device_pb(restored))

    async def RecordDeviceLocation(
        self, request: devices_pb2.RecordDeviceLocationRequest, context: Any
    ) -> devices_pb2.RecordDeviceLocationResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        loc = request.location
        if not request.HasField("location"):
            errors.add("location", "required")
        if not -90 <= loc.latitude <= 90:
            errors.add("location.latitude", "must be -90 to 90")
        if not -180 <= loc.longitude <= 180:
            errors.add("location.longitude", "must be -180 to 180")
        if loc.HasField("accuracy_m") and not loc.accuracy_m >= 0:
            errors.add("location.accuracy_m", "must not be negative")
        if loc.HasField("altitude_m") and not abs(loc.altitude_m) < 100_000:
            errors.add("location.altitude_m", "must be within 100 km of sea level")
        source = "manual"
        if loc.source != devices_pb2.LOCATION_SOURCE_UNSPECIFIED:
            source = _SOURCE_FROM_PB.get(loc.source, "")
            if not source:
                errors.add("location.source", "unknown source")
        when = loc.time.ToDatetime(UTC) if loc.HasField("time") else datetime.now(UTC)
        if when > datetime.now(UTC).replace(microsecond=0) + _FUTURE_SLACK:
            errors.add("location.time", "must not be in the future")
        errors.raise_if_any()
        new = device_store.Location(
            when,
            loc.latitude,
            loc.longitude,
            loc.altitude_m if loc.HasField("altitude_m") else None,
            loc.accuracy_m if loc.HasField("accuracy_m") else None,
            source,
        )
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id)
            principal.require(DEVICES_WRITE)
            recorded = await location_store.record_location(conn, device_id, device.client_id, new)
        return devices_pb2.RecordDeviceLocationResponse(location=location_pb(recorded))

    async def ListDeviceLocations(
        self, request: devices_pb2.ListDeviceLocationsRequest, context: Any
    ) -> devices_pb2.ListDeviceLocationsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            errors.add("end_time", "must be after start_time")
        key = decode_page_token(errors, request.page_token, 1)
        before = _parse_time(errors, key[0]) if key else None
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await location_store.list_locations(
                conn, device_id, start=start, end=end, before=before, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceLocationsResponse(
            locations=[location_pb(r) for r in page],
            next_page_token=encode_page_token([page[-1].time.isoformat()]) if more else "",
        )

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
            device = await require_device(conn, principal, device_id)
            principal.require(DEVICES_WRITE)
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
            await require_device(conn, principal, device_id)
            principal.require(DEVICES_WRITE)
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

    async def ListDeviceAlarms(
        self, request: devices_pb2.ListDeviceAlarmsRequest, context: Any
    ) -> devices_pb2.ListDeviceAlarmsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        after = _time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await alarm_store.list_alarms(
                conn, device_id, open_only=request.open_only, after=after, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceAlarmsResponse(
            alarms=[_alarm_pb(a) for a in page],
            next_page_token=_time_id_token(page[-1].raised_at, page[-1].id) if more else "",
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
            await require_device(conn, principal, device_id)
            principal.require(ALARMS_ACK)
            alarm = await alarm_store.clear_alarm(conn, device_id, alarm_id)
        if alarm is None:
            raise NotFound("alarm not found")
        return devices_pb2.ClearDeviceAlarmResponse(alarm=_alarm_pb(alarm))


class _RollBack(Exception):
    """Undo an all-or-nothing batch whose insert skipped a row."""


_FUTURE_SLACK = timedelta(minutes=5)


def _device_mask(errors: ErrorCollector, paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """The mask's field paths and its metadata.KEY keys; a violation per bad path."""
    plain: list[str] = []
    keys: list[str] = []
    for path in dict.fromkeys(paths):
        if path in DEVICE_MASK_FIELDS:
            plain.append(path)
        elif path.startswith("metadata.") and _METADATA_KEY.match(path[len("metadata.") :]):
            keys.append(path[len("metadata.") :])
        else:
            errors.add("update_mask", f"unknown or read-only path {path[:80]!r}")
    if not paths:
        errors.add("update_mask", f"name at least one of: {', '.join(DEVICE_MASK_FIELDS)}")
    if "metadata" in plain and keys:
        errors.add("update_mask", "name either metadata or metadata.KEY paths, not both")
    return plain, keys


def _fail(
    result: devices_pb2.BatchCreateResult,
    code: str,
    message: str,
    violations: list[FieldViolation] | tuple[FieldViolation, ...] = (),
) -> None:
    result.error_code = code
    result.error_message = message
    result.field_violations.extend(
        devices_pb2.BatchFieldViolation(field=v.field, description=v.description)
        for v in violations
    )


def _parse_time(errors: ErrorCollector, value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        errors.add("page_token", "is not a token this API returned")
        return None
    return parsed


def _time_id_token(time: datetime, row_id: uuid.UUID) -> str:
    return encode_page_token([time.isoformat(), str(row_id)])


def _time_id_cursor(errors: ErrorCollector, token: str) -> tuple[datetime, uuid.UUID] | None:
    key = decode_page_token(errors, token, 2)
    if key is None:
        return None
    when = _parse_time(errors, key[0])
    try:
        row_id = uuid.UUID(key[1])
    except ValueError:
        errors.add("page_token", "is not a token this API returned")
        return None
    return (when, row_id) if when is not None else None
