"""Who sees and changes which device: the role matrix, assignments, alarms, two tenants."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import devices_pb2, devices_pb2_grpc
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Server, make_staff, make_tenant


def stub(server: Server) -> devices_pb2_grpc.DeviceServiceStub:
    return devices_pb2_grpc.DeviceServiceStub(server.channel)


async def make_alarm(conn: asyncpg.Connection, client_id: uuid.UUID, device_id: uuid.UUID) -> str:
    async with tenant_transaction(conn, None, staff=True):
        alarm_id = await conn.fetchval(
            "INSERT INTO device_alarms (client_id, device_id, code, severity, raised_at, payload) "
            "VALUES ($1, $2, 'door_open', 'major', $3, '{\"door\": 2}') RETURNING id",
            client_id,
            device_id,
            datetime.now(UTC) - timedelta(minutes=1),
        )
    return str(alarm_id)


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# --- presence (issue 13) ---
async def first_of(stream: Any) -> Any:
    """The first message of a server stream (its error, raised, when it fails)."""
    return await stream.read()


async def test_role_matrix_presence_reads_follow_assignments(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    staff = await make_staff(grpc_server, owner_conn, "admin")
    api = stub(grpc_server)
    mine, _ = await factories.make_device(owner_conn, tenant.client_id)
    other, _ = await factories.make_device(owner_conn, tenant.client_id)
    for role in ("operator", "viewer"):
        await api.AssignDevice(
            devices_pb2.AssignDeviceRequest(
                device_id=str(mine), user_id=str(tenant.users[role].user_id)
            ),
            metadata=tenant.users["client"].md,
        )
    expected = {
        # role: (its assigned device, the unassigned one)
        "client": (grpc.StatusCode.OK, grpc.StatusCode.OK),
        "operator": (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND),
        "viewer": (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND),
        "staff": (grpc.StatusCode.OK, grpc.StatusCode.OK),
    }
    accounts = {**tenant.users, "staff": staff}
    for role, codes in expected.items():
        md = accounts[role].md
        for device, code in zip((mine, other), codes, strict=True):
            history = api.ListDeviceConnections(
                devices_pb2.ListDeviceConnectionsRequest(device_id=str(device)), metadata=md
            )
            assert await code_of(history) == code, (role, "ListDeviceConnections", device)
            stream = api.StreamDeviceEvents(
                devices_pb2.StreamDeviceEventsRequest(device_ids=[str(device)]), metadata=md
            )
            assert await code_of(first_of(stream)) == code, (role, "StreamDeviceEvents")
            stream.cancel()


# --- end presence (issue 13) ---


async def test_role_matrix_operators_and_viewers_see_only_assigned_devices(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin, operator, viewer = (tenant.users[r] for r in ("client", "operator", "viewer"))
    api = stub(grpc_server)
    ids = [(await factories.make_device(owner_conn, tenant.client_id))[0] for _ in range(3)]
    mine, other = str(ids[0]), str(ids[1])
    for user, level in ((operator, devices_pb2.ACCESS_LEVEL_OPERATE), (viewer, 0)):
        reply = await api.AssignDevice(
            devices_pb2.AssignDeviceRequest(
                device_id=mine, user_id=str(user.user_id), access_level=level
            ),
            metadata=admin.md,
        )
        assert reply.assignment.user_email == user.email
    assigned = await api.ListDeviceAssignments(
        devices_pb2.ListDeviceAssignmentsRequest(device_id=mine), metadata=admin.md
    )
    assert {(a.user_id, a.access_level) for a in assigned.assignments} == {
        (str(operator.user_id), devices_pb2.ACCESS_LEVEL_OPERATE),
        (str(viewer.user_id), devices_pb2.ACCESS_LEVEL_VIEW),
    }

    everything = await api.ListDevices(devices_pb2.ListDevicesRequest(), metadata=admin.md)
    assert {d.id for d in everything.devices} == {str(i) for i in ids}
    for user in (operator, viewer):
        listed = await api.ListDevices(devices_pb2.ListDevicesRequest(), metadata=user.md)
        assert [d.id for d in listed.devices] == [mine]
        get_other = api.GetDevice(devices_pb2.GetDeviceRequest(id=other), metadata=user.md)
        assert await code_of(get_other) == grpc.StatusCode.NOT_FOUND
        rename = devices_pb2.UpdateDeviceRequest(
            device=devices_pb2.Device(id=mine, name="mine now"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
        denied = await code_of(api.UpdateDevice(rename, metadata=user.md))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        rename.device.id = other
        assert await code_of(api.UpdateDevice(rename, metadata=user.md)) == (
            grpc.StatusCode.NOT_FOUND
        )
        create = api.CreateDevice(
            devices_pb2.CreateDeviceRequest(device=devices_pb2.Device(serial="X1", name="x")),
            metadata=user.md,
        )
        assert await code_of(create) == grpc.StatusCode.PERMISSION_DENIED

    alarm = await make_alarm(owner_conn, tenant.client_id, ids[0])
    alarms = await api.ListDeviceAlarms(
        devices_pb2.ListDeviceAlarmsRequest(device_id=mine, open_only=True), metadata=viewer.md
    )
    assert [(a.id, a.code, dict(a.payload)) for a in alarms.alarms] == [
        (alarm, "door_open", {"door": 2})
    ]
    clear = devices_pb2.ClearDeviceAlarmRequest(device_id=mine, alarm_id=alarm)
    assert await code_of(api.ClearDeviceAlarm(clear, metadata=viewer.md)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    cleared = await api.ClearDeviceAlarm(clear, metadata=operator.md)
    assert cleared.alarm.HasField("clear_time")
    still_open = await api.ListDeviceAlarms(
        devices_pb2.ListDeviceAlarmsRequest(device_id=mine, open_only=True), metadata=admin.md
    )
    assert not still_open.alarms

    await api.UnassignDevice(
        devices_pb2.UnassignDeviceRequest(device_id=mine, user_id=str(viewer.user_id)),
        metadata=admin.md,
    )
    # Assignments are read per call: the viewer loses the device at once.
    lost = api.GetDevice(devices_pb2.GetDeviceRequest(id=mine), metadata=viewer.md)
    assert await code_of(lost) == grpc.StatusCode.NOT_FOUND
    again = api.UnassignDevice(
        devices_pb2.UnassignDeviceRequest(device_id=mine, user_id=str(viewer.user_id)),
        metadata=admin.md,
    )
    assert await code_of(again) == grpc.StatusCode.NOT_FOUND


async def test_two_tenants_every_device_rpc_reads_not_found_across(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    home = await make_tenant(grpc_server, owner_conn)
    away = await make_tenant(grpc_server, owner_conn)
    device_id, _ = await factories.make_device(owner_conn, home.client_id)
    alarm = await make_alarm(owner_conn, home.client_id, device_id)
    api = stub(grpc_server)
    target = str(device_id)
    # --- credentials (issue 13): the home device has a live credential ---
    credential = (
        await api.CreateDeviceCredential(
            devices_pb2.CreateDeviceCredentialRequest(device_id=target),
            metadata=home.users["client"].md,
        )
    ).credential.id
    # --- end credentials (issue 13) ---
    calls: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "GetDevice": lambda md: api.GetDevice(devices_pb2.GetDeviceRequest(id=target), metadata=md),
        "UpdateDevice": lambda md: api.UpdateDevice(
            devices_pb2.UpdateDeviceRequest(
                device=devices_pb2.Device(id=target, name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=md,
        ),
        "DeleteDevice": lambda md: api.DeleteDevice(
            devices_pb2.DeleteDeviceRequest(id=target, hard=True), metadata=md
        ),
        "ListDeviceHistory": lambda md: api.ListDeviceHistory(
            devices_pb2.ListDeviceHistoryRequest(device_id=target), metadata=md
        ),
        "CreateDeviceSnapshot": lambda md: api.CreateDeviceSnapshot(
            devices_pb2.CreateDeviceSnapshotRequest(device_id=target, reason="r"), metadata=md
        ),
        "ListDeviceSnapshots": lambda md: api.ListDeviceSnapshots(
            devices_pb2.ListDeviceSnapshotsRequest(device_id=target), metadata=md
        ),
        "RestoreDeviceSnapshot": lambda md: api.RestoreDeviceSnapshot(
            devices_pb2.RestoreDeviceSnapshotRequest(device_id=target, snapshot_id=alarm),
            metadata=md,
        ),
        "RecordDeviceLocation": lambda md: api.RecordDeviceLocation(
            devices_pb2.RecordDeviceLocationRequest(
                device_id=target, location=devices_pb2.DeviceLocation(latitude=1, longitude=1)
            ),
            metadata=md,
        ),
        "ListDeviceLocations": lambda md: api.ListDeviceLocations(
            devices_pb2.ListDeviceLocationsRequest(device_id=target), metadata=md
        ),
        "AssignDevice": lambda md: api.AssignDevice(
            devices_pb2.AssignDeviceRequest(
                device_id=target, user_id=str(away.users["viewer"].user_id)
            ),
            metadata=md,
        ),
        "UnassignDevice": lambda md: api.UnassignDevice(
            devices_pb2.UnassignDeviceRequest(
                device_id=target, user_id=str(away.users["viewer"].user_id)
            ),
            metadata=md,
        ),
        "ListDeviceAssignments": lambda md: api.ListDeviceAssignments(
            devices_pb2.ListDeviceAssignmentsRequest(device_id=target), metadata=md
        ),
        "ListDeviceAlarms": lambda md: api.ListDeviceAlarms(
            devices_pb2.ListDeviceAlarmsRequest(device_id=target), metadata=md
        ),
        "ClearDeviceAlarm": lambda md: api.ClearDeviceAlarm(
            devices_pb2.ClearDeviceAlarmRequest(device_id=target, alarm_id=alarm), metadata=md
        ),
        # --- credentials (issue 13) ---
        "CreateDeviceCredential": lambda md: api.CreateDeviceCredential(
            devices_pb2.CreateDeviceCredentialRequest(device_id=target), metadata=md
        ),
        "ListDeviceCredentials": lambda md: api.ListDeviceCredentials(
            devices_pb2.ListDeviceCredentialsRequest(device_id=target), metadata=md
        ),
        "RotateDeviceCredential": lambda md: api.RotateDeviceCredential(
            devices_pb2.RotateDeviceCredentialRequest(device_id=target, credential_id=credential),
            metadata=md,
        ),
        "RevokeDeviceCredential": lambda md: api.RevokeDeviceCredential(
            devices_pb2.RevokeDeviceCredentialRequest(device_id=target, credential_id=credential),
            metadata=md,
        ),
        # --- end credentials (issue 13) ---
        # --- presence (issue 13) ---
        "ListDeviceConnections": lambda md: api.ListDeviceConnections(
            devices_pb2.ListDeviceConnectionsRequest(device_id=target), metadata=md
        ),
        "StreamDeviceEvents": lambda md: first_of(
            api.StreamDeviceEvents(
                devices_pb2.StreamDeviceEventsRequest(device_ids=[target]), metadata=md
            )
        ),
        # --- end presence (issue 13) ---
    }
    for name, call in calls.items():
        for role in ("client", "operator", "viewer"):
            assert await code_of(call(away.users[role].md)) == grpc.StatusCode.NOT_FOUND, (
                name,
                role,
            )
    listed = await api.ListDevices(
        devices_pb2.ListDevicesRequest(page_size=500), metadata=away.users["client"].md
    )
    assert target not in {d.id for d in listed.devices}
    # The home admin may not assign the other tenant's user to their device either.
    cross = api.AssignDevice(
        devices_pb2.AssignDeviceRequest(
            device_id=target, user_id=str(away.users["viewer"].user_id)
        ),
        metadata=home.users["client"].md,
    )
    assert await code_of(cross) == grpc.StatusCode.NOT_FOUND
    # The device survived every attempt.
    alive = await api.GetDevice(
        devices_pb2.GetDeviceRequest(id=target), metadata=home.users["client"].md
    )
    assert alive.device.name == alive.device.serial


async def test_staff_register_devices_for_a_named_client_and_see_every_tenant(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(grpc_server, owner_conn, "admin")
    one = await make_tenant(grpc_server, owner_conn)
    two = await make_tenant(grpc_server, owner_conn)
    api = stub(grpc_server)
    missing = api.CreateDevice(
        devices_pb2.CreateDeviceRequest(device=devices_pb2.Device(serial="S1", name="s")),
        metadata=staff.md,
    )
    assert await code_of(missing) == grpc.StatusCode.INVALID_ARGUMENT
    made = []
    for tenant in (one, two):
        reply = await api.CreateDevice(
            devices_pb2.CreateDeviceRequest(
                device=devices_pb2.Device(serial=factories.unique("ST").upper(), name="s"),
                client_id=str(tenant.client_id),
            ),
            metadata=staff.md,
        )
        assert reply.device.client_id == str(tenant.client_id)
        made.append(reply.device.id)
    for tenant, device_id in zip((one, two), made, strict=True):
        listed = await api.ListDevices(
            devices_pb2.ListDevicesRequest(client_id=str(tenant.client_id)), metadata=staff.md
        )
        assert [d.id for d in listed.devices] == [device_id]
    with pytest.raises(grpc.aio.AioRpcError) as other_client:
        await api.ListDevices(
            devices_pb2.ListDevicesRequest(client_id=str(two.client_id)),
            metadata=one.users["client"].md,
        )
    assert other_client.value.code() == grpc.StatusCode.INVALID_ARGUMENT
