"""DeviceService: a device's metadata history and snapshots."""

from __future__ import annotations

from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.common import (
    check_text,
    page_size,
    parse_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.services.devices.mapping import (
    device_pb,
    struct_of,
    value_of,
)
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.services.devices.validation import MAX_REASON
from lifebox_grpc.store import devices as device_store
from lifebox_grpc.store import snapshots as snapshot_store


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


def _history_pb(entry: device_store.HistoryEntry) -> devices_pb2.DeviceHistoryEntry:
    return devices_pb2.DeviceHistoryEntry(
        id=str(entry.id),
        changed_by=str(entry.changed_by) if entry.changed_by else "",
        path=entry.path,
        old_value=value_of(entry.old_value),
        new_value=value_of(entry.new_value),
        change_time=timestamp(entry.changed_at),
    )


class HistoryRpcs(DeviceRpcs):
    """Metadata history and snapshots."""

    async def ListDeviceHistory(
        self, request: devices_pb2.ListDeviceHistoryRequest, context: Any
    ) -> devices_pb2.ListDeviceHistoryResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await device_store.list_history(conn, device_id, after=after, limit=size + 1)
        page, token = time_id_page(rows, size, lambda row: row.changed_at)
        return devices_pb2.ListDeviceHistoryResponse(
            entries=[_history_pb(e) for e in page], next_page_token=token
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
            await require_device(conn, principal, device_id, DeviceAction.UPDATE_METADATA)
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
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await snapshot_store.list_snapshots(conn, device_id, after=after, limit=size + 1)
        page, token = time_id_page(rows, size, lambda row: row.taken_at)
        return devices_pb2.ListDeviceSnapshotsResponse(
            snapshots=[_snapshot_pb(s) for s in page], next_page_token=token
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
            device = await require_device(
                conn, principal, device_id, DeviceAction.UPDATE_METADATA, lock=True
            )
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
