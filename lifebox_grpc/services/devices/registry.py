"""DeviceService: registering, reading, updating and deleting devices."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, FieldViolation, InvalidArgument
from lifebox_grpc.services.common import (
    check_text,
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
)
from lifebox_grpc.services.device_access import device_filter, require_device
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.services.devices.mapping import (
    PRESENCE_STATE_FROM_PB,  # presence (issue 13)
    STATUS_FROM_PB,
    device_pb,
)
from lifebox_grpc.services.devices.validation import (
    MAX_BATCH,
    MAX_METADATA_BYTES,
    MAX_NAME,
    check_interval,
    check_serial,
    check_type,
    device_mask,
    metadata_of,
    optional_text,
)
from lifebox_grpc.store import devices as device_store
from lifebox_grpc.store.billing_subscriptions import check_device_quota  # billing (issue 16)
from lifebox_grpc.store.pool import savepoint

log = logging.getLogger(__name__)


class RegistryRpcs(DeviceRpcs):
    """Create, get, list, update, delete and batch-create devices."""

    def _default_interval(self, device_type: str) -> int:
        return self.settings.device_type_intervals.get(
            device_type, self.settings.device_default_interval_seconds
        )

    def _new_device(self, errors: ErrorCollector, prefix: str, d: devices_pb2.Device) -> Any:
        """The validated NewDevice of ``d``; None (with violations recorded) when invalid."""
        before = len(errors.violations)
        check_serial(errors, f"{prefix}serial", d.serial)
        check_text(errors, f"{prefix}name", d.name, max_length=MAX_NAME)
        device_type = d.device_type or "generic"
        check_type(errors, f"{prefix}device_type", device_type)
        model = optional_text(errors, f"{prefix}model", d.model)
        firmware = optional_text(errors, f"{prefix}firmware_version", d.firmware_version)
        status = "provisioned"
        if d.status != devices_pb2.DEVICE_STATUS_UNSPECIFIED:
            status = STATUS_FROM_PB.get(d.status, "")
            if status not in ("provisioned", "active"):
                errors.add(f"{prefix}status", "a new device is PROVISIONED or ACTIVE")
        interval = d.expected_interval_seconds or self._default_interval(device_type)
        check_interval(errors, f"{prefix}expected_interval_seconds", interval)
        metadata = metadata_of(errors, f"{prefix}metadata", d.metadata)
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
            await check_device_quota(conn, client_id, 1)  # billing (issue 16)
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
            status = STATUS_FROM_PB.get(request.status)
            if status is None:
                errors.add("status", "unknown status")
        if request.device_type:
            check_type(errors, "device_type", request.device_type)
        check_text(errors, "search", request.search, max_length=MAX_NAME, required=False)
        presence_state = None  # --- presence (issue 13) ---
        if request.presence_state != devices_pb2.PRESENCE_STATE_UNSPECIFIED:
            presence_state = PRESENCE_STATE_FROM_PB.get(request.presence_state)
            if presence_state is None:
                errors.add("presence_state", "must be ONLINE, OFFLINE or STALE")
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
                presence_state=presence_state,  # presence (issue 13)
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
        plain, keys = device_mask(errors, request.update_mask.paths)
        changes: dict[str, object] = {}
        if "name" in plain:
            check_text(errors, "device.name", new.name, max_length=MAX_NAME)
            changes["name"] = new.name
        if "device_type" in plain:
            check_type(errors, "device.device_type", new.device_type)
            changes["device_type"] = new.device_type
        if "model" in plain:
            changes["model"] = optional_text(errors, "device.model", new.model)
        if "firmware_version" in plain:
            changes["firmware_version"] = optional_text(
                errors, "device.firmware_version", new.firmware_version
            )
        if "status" in plain:
            status = STATUS_FROM_PB.get(new.status)
            if status is None:
                errors.add(
                    "device.status", "must be PROVISIONED, ACTIVE, DISABLED or DECOMMISSIONED"
                )
            changes["status"] = status
        if "expected_interval_seconds" in plain:
            check_interval(
                errors, "device.expected_interval_seconds", new.expected_interval_seconds
            )
            changes["expected_interval_s"] = new.expected_interval_seconds
        metadata = metadata_of(errors, "device.metadata", new.metadata)
        errors.raise_if_any()
        # A status change is the device's lifecycle (decommissioning is a soft delete), not
        # its metadata: it takes what deleting takes.
        actions = [DeviceAction.CHANGE_STATUS] if "status" in plain else []
        if keys or any(path != "status" for path in plain):
            actions.append(DeviceAction.UPDATE_METADATA)
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id, *actions, lock=True)
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
            device = await require_device(
                conn, principal, device_id, DeviceAction.DELETE, lock=True
            )
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
                await check_device_quota(conn, client_id, len(valid))  # billing (issue 16)
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


class _RollBack(Exception):
    """Undo an all-or-nothing batch whose insert skipped a row."""


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
