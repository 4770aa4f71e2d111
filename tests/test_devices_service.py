"""DeviceService end to end over gRPC: registry, history, snapshots, locations, batches."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from lifebox.v1 import devices_pb2, devices_pb2_grpc
from tests.helpers import factories
from tests.helpers.grpc import Account, Server, make_tenant, violations


def stub(server: Server) -> devices_pb2_grpc.DeviceServiceStub:
    return devices_pb2_grpc.DeviceServiceStub(server.channel)


def meta(**values: object) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def create(server: Server, who: Account, **fields: object) -> devices_pb2.Device:
    fields.setdefault("serial", factories.unique("SN").upper())
    fields.setdefault("name", "Pump 1")
    reply = await stub(server).CreateDevice(
        devices_pb2.CreateDeviceRequest(device=devices_pb2.Device(**fields)),  # type: ignore[arg-type]
        metadata=who.md,
    )
    return reply.device


async def test_create_get_update_with_history_and_delete(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    device = await create(
        grpc_server, admin, device_type="meter", metadata=meta(site="north", floor=2)
    )
    assert device.status == devices_pb2.DEVICE_STATUS_PROVISIONED
    assert device.client_id == str(tenant.client_id)
    assert device.expected_interval_seconds == 60
    assert not device.online
    got = await api.GetDevice(devices_pb2.GetDeviceRequest(id=device.id), metadata=admin.md)
    assert got.device == device

    updated = await api.UpdateDevice(
        devices_pb2.UpdateDeviceRequest(
            device=devices_pb2.Device(
                id=device.id,
                name="Pump 1b",
                status=devices_pb2.DEVICE_STATUS_ACTIVE,
                metadata=meta(site="south"),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["name", "status", "metadata.site", "metadata.floor"]
            ),
        ),
        metadata=admin.md,
    )
    assert updated.device.name == "Pump 1b"
    assert updated.device.status == devices_pb2.DEVICE_STATUS_ACTIVE
    assert dict(updated.device.metadata) == {"site": "south"}
    history = await api.ListDeviceHistory(
        devices_pb2.ListDeviceHistoryRequest(device_id=device.id), metadata=admin.md
    )
    changes = {
        e.path: (e.old_value.WhichOneof("kind"), e.new_value.WhichOneof("kind"))
        for e in history.entries
    }
    assert set(changes) == {"name", "status", "metadata.site", "metadata.floor"}
    by_path = {e.path: e for e in history.entries}
    assert by_path["name"].old_value.string_value == "Pump 1"
    assert by_path["name"].new_value.string_value == "Pump 1b"
    assert by_path["metadata.floor"].old_value.number_value == 2
    assert by_path["metadata.floor"].new_value.WhichOneof("kind") == "null_value"
    assert {e.changed_by for e in history.entries} == {str(admin.user_id)}

    soft = await api.DeleteDevice(devices_pb2.DeleteDeviceRequest(id=device.id), metadata=admin.md)
    assert not soft.deleted
    assert soft.device.status == devices_pb2.DEVICE_STATUS_DECOMMISSIONED
    assert soft.device.HasField("decommission_time")

    await factories.make_reading(owner_conn, tenant.client_id, uuid.UUID(device.id), voltage_l1=1.0)
    hard = await api.DeleteDevice(
        devices_pb2.DeleteDeviceRequest(id=device.id, hard=True), metadata=admin.md
    )
    assert hard.deleted
    assert hard.removed.telemetry_events == 1
    assert hard.removed.history_entries >= 5
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await api.GetDevice(devices_pb2.GetDeviceRequest(id=device.id), metadata=admin.md)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_snapshots_restore_is_a_recorded_change(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    device = await create(grpc_server, admin, metadata=meta(mode="eco"), firmware_version="1.0")
    snap = await api.CreateDeviceSnapshot(
        devices_pb2.CreateDeviceSnapshotRequest(device_id=device.id, reason="before upgrade"),
        metadata=admin.md,
    )
    assert dict(snap.snapshot.metadata) == {"mode": "eco"}
    await api.UpdateDevice(
        devices_pb2.UpdateDeviceRequest(
            device=devices_pb2.Device(
                id=device.id, metadata=meta(mode="turbo", x=1), firmware_version="2.0"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["metadata", "firmware_version"]),
        ),
        metadata=admin.md,
    )
    listed = await api.ListDeviceSnapshots(
        devices_pb2.ListDeviceSnapshotsRequest(device_id=device.id), metadata=admin.md
    )
    assert [s.id for s in listed.snapshots] == [snap.snapshot.id]
    restored = await api.RestoreDeviceSnapshot(
        devices_pb2.RestoreDeviceSnapshotRequest(device_id=device.id, snapshot_id=snap.snapshot.id),
        metadata=admin.md,
    )
    assert dict(restored.device.metadata) == {"mode": "eco"}
    assert restored.device.firmware_version == "1.0"
    history = await api.ListDeviceHistory(
        devices_pb2.ListDeviceHistoryRequest(device_id=device.id, page_size=3), metadata=admin.md
    )
    newest = {e.path: e.new_value for e in history.entries}
    assert newest["metadata.mode"].string_value == "eco"
    assert newest["firmware_version"].string_value == "1.0"
    assert newest["metadata.x"].WhichOneof("kind") == "null_value"
    assert history.next_page_token


async def test_locations_history_and_latest_on_the_device(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    device = await create(grpc_server, admin)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    for i in range(5):
        await api.RecordDeviceLocation(
            devices_pb2.RecordDeviceLocationRequest(
                device_id=device.id,
                location=devices_pb2.DeviceLocation(
                    time=ts(base + timedelta(minutes=i)),
                    latitude=30.0 + i,
                    longitude=31.0,
                    accuracy_m=5,
                    source=devices_pb2.LOCATION_SOURCE_GPS,
                ),
            ),
            metadata=admin.md,
        )
    # A late, older fix joins the trail but does not move the latest location back.
    await api.RecordDeviceLocation(
        devices_pb2.RecordDeviceLocationRequest(
            device_id=device.id,
            location=devices_pb2.DeviceLocation(
                time=ts(base - timedelta(hours=1)), latitude=10.0, longitude=11.0
            ),
        ),
        metadata=admin.md,
    )
    got = await api.GetDevice(devices_pb2.GetDeviceRequest(id=device.id), metadata=admin.md)
    assert got.device.latest_location.latitude == 34.0
    assert got.device.latest_location.time == ts(base + timedelta(minutes=4))
    assert got.device.latest_location.accuracy_m == 5
    assert not got.device.latest_location.HasField("altitude_m")
    seen: list[float] = []
    token = ""
    while True:
        page = await api.ListDeviceLocations(
            devices_pb2.ListDeviceLocationsRequest(
                device_id=device.id,
                start_time=ts(base + timedelta(minutes=1)),
                page_size=2,
                page_token=token,
            ),
            metadata=admin.md,
        )
        seen += [loc.latitude for loc in page.locations]
        token = page.next_page_token
        if not token:
            break
    assert seen == [34.0, 33.0, 32.0, 31.0]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.RecordDeviceLocation(
            devices_pb2.RecordDeviceLocationRequest(
                device_id=device.id,
                location=devices_pb2.DeviceLocation(latitude=91, longitude=-181, accuracy_m=-1),
            ),
            metadata=admin.md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(bad.value)) == {
        "location.latitude",
        "location.longitude",
        "location.accuracy_m",
    }


async def test_batch_create_per_row_results_and_all_or_nothing(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    existing = await create(grpc_server, admin)
    prefix = factories.unique("B").upper()
    rows = [devices_pb2.Device(serial=f"{prefix}-{i:05d}", name=f"d{i}") for i in range(10_000)]
    rows[3] = devices_pb2.Device(serial="bad serial!", name="x")
    rows[5] = devices_pb2.Device(serial=existing.serial, name="dup")
    strict = await api.BatchCreateDevices(
        devices_pb2.BatchCreateDevicesRequest(devices=rows, all_or_nothing=True),
        metadata=admin.md,
        timeout=60,
    )
    assert strict.created_count == 0
    assert strict.results[3].error_code == "INVALID_ARGUMENT"
    assert strict.results[3].field_violations[0].field == "serial"
    assert strict.results[0].error_code == "ABORTED"
    del rows[3]
    strict = await api.BatchCreateDevices(
        devices_pb2.BatchCreateDevicesRequest(devices=rows, all_or_nothing=True),
        metadata=admin.md,
        timeout=60,
    )
    assert strict.created_count == 0
    assert strict.results[4].error_code == "ALREADY_EXISTS"
    assert strict.results[0].error_code == "ABORTED"

    started = asyncio.get_running_loop().time()
    lenient = await api.BatchCreateDevices(
        devices_pb2.BatchCreateDevicesRequest(devices=rows), metadata=admin.md, timeout=60
    )
    elapsed = asyncio.get_running_loop().time() - started
    assert lenient.created_count == len(rows) - 1
    assert lenient.results[4].error_code == "ALREADY_EXISTS"
    assert lenient.results[0].device.serial == rows[0].serial
    assert lenient.results[0].device.client_id == str(tenant.client_id)
    assert elapsed < 20, f"10,000 devices took {elapsed:.1f}s"

    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await api.BatchCreateDevices(
            devices_pb2.BatchCreateDevicesRequest(devices=[rows[0]] * 10_001), metadata=admin.md
        )
    assert "devices" in violations(too_many.value)


async def test_list_filters_and_paging_while_devices_are_added(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    for i in range(30):
        await factories.make_device(
            owner_conn,
            tenant.client_id,
            f"P{i:03d}-{tenant.client_id.hex[:6]}",
            status="active" if i % 3 else "disabled",
            device_type="meter" if i % 2 else "sensor",
        )
    original = {f"P{i:03d}-{tenant.client_id.hex[:6]}" for i in range(30)}
    seen: list[str] = []
    token = ""
    added = 0
    while True:
        page = await api.ListDevices(
            devices_pb2.ListDevicesRequest(page_size=4, page_token=token), metadata=admin.md
        )
        seen += [d.serial for d in page.devices]
        # Devices land before and after the cursor between pages.
        for prefix in ("A", "Z"):
            await factories.make_device(
                owner_conn, tenant.client_id, f"{prefix}{added:03d}-{tenant.client_id.hex[:6]}"
            )
            added += 1
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a device was listed twice"
    assert original <= set(seen), "a device that existed throughout was skipped"
    assert seen == sorted(seen)

    filtered = await api.ListDevices(
        devices_pb2.ListDevicesRequest(
            page_size=100,
            status=devices_pb2.DEVICE_STATUS_DISABLED,
            device_type="meter",
            search="p0",
        ),
        metadata=admin.md,
    )
    expected = {f"P{i:03d}-{tenant.client_id.hex[:6]}" for i in range(30) if i % 3 == 0 and i % 2}
    assert {d.serial for d in filtered.devices} == expected


async def test_bad_device_requests_name_every_field(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.CreateDevice(
            devices_pb2.CreateDeviceRequest(
                device=devices_pb2.Device(
                    serial="a/b",
                    name="",
                    device_type="Bad Type",
                    status=devices_pb2.DEVICE_STATUS_DECOMMISSIONED,
                    expected_interval_seconds=-5,
                )
            ),
            metadata=admin.md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(bad.value)) == {
        "device.serial",
        "device.name",
        "device.device_type",
        "device.status",
        "device.expected_interval_seconds",
    }
    device = await create(grpc_server, admin)
    with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
        await api.UpdateDevice(
            devices_pb2.UpdateDeviceRequest(
                device=devices_pb2.Device(id=device.id),
                update_mask=field_mask_pb2.FieldMask(paths=["serial", "metadata.a b"]),
            ),
            metadata=admin.md,
        )
    assert "update_mask" in violations(bad_mask.value)
    with pytest.raises(grpc.aio.AioRpcError) as big_page:
        await api.ListDevices(devices_pb2.ListDevicesRequest(page_size=501), metadata=admin.md)
    assert "page_size" in violations(big_page.value)
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await create(grpc_server, admin, serial=device.serial)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
