"""An assignment's access level means one thing everywhere (issue 12 §7).

VIEW reads; OPERATE also clears and acknowledges alarms; MANAGE also updates the device's
metadata, snapshots and location, and manages its broker credentials. No level deletes,
reassigns or changes the status of a device, and the role's permissions cap what a level
allows (a viewer holds no alarms.ack, and no devices.credentials: issue 13).
A device a caller may not see is NOT_FOUND; one it sees but may not change is
PERMISSION_DENIED.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from google.protobuf import field_mask_pb2

from lifebox.v1 import devices_pb2 as D
from lifebox.v1 import devices_pb2_grpc
from lifebox_grpc.auth.permissions import (
    CATALOGUE,
    DEVICE_ACTIONS,
    DEVICES_CREDENTIALS,
    METHOD_RULES,
    AccessLevel,
    DeviceAction,
    allowed_actions,
)
from lifebox_grpc.store.command_catalogue import ALL_PERMISSIONS, DEFAULT_ROLE_PERMISSIONS
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Account, Server, error_of, make_staff, make_tenant
from tests.test_devices_access import code_of, make_alarm

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
LEVELS = {
    AccessLevel.VIEW: D.ACCESS_LEVEL_VIEW,
    AccessLevel.OPERATE: D.ACCESS_LEVEL_OPERATE,
    AccessLevel.MANAGE: D.ACCESS_LEVEL_MANAGE,
}
# Each RPC that acts on a device, in the order the matrix calls them (deletion last).
ACTIONS = (
    "get",
    "list_alarms",
    "clear_alarm",
    "rename",
    "set_metadata",
    "snapshot",
    "restore",
    "record_location",
    # credentials (issue 13): list, rotate and revoke the live one, then create another
    "list_credentials",
    "rotate_credential",
    "revoke_credential",
    "create_credential",
    "set_status",
    "assign",
    "unassign",
    "delete",
)
_READS = {"get": OK, "list_alarms": OK}
_OPERATES = {"clear_alarm": OK}
_MANAGES = dict.fromkeys(("rename", "set_metadata", "snapshot", "restore", "record_location"), OK)
_CREDENTIALS = dict.fromkeys(
    ("list_credentials", "rotate_credential", "revoke_credential", "create_credential"), OK
)


def expected(role: str, level: AccessLevel | None) -> dict[str, grpc.StatusCode]:
    """What each action returns for ``role`` assigned at ``level`` (None: not assigned)."""
    if role in ("client", "admin"):
        return dict.fromkeys(ACTIONS, OK)
    if level is None:
        return dict.fromkeys(ACTIONS, NOT_FOUND)
    out = dict.fromkeys(ACTIONS, DENIED) | _READS
    if level.rank >= AccessLevel.OPERATE.rank and role == "operator":
        out |= _OPERATES  # the viewer role holds no alarms.ack, whatever the level
    if level.rank >= AccessLevel.MANAGE.rank:
        out |= _MANAGES
        if role == "operator":
            out |= _CREDENTIALS  # the viewer role holds no devices.credentials
    return out


@dataclass
class Target:
    """A fresh device with an open alarm, a snapshot, a live credential and a bystander
    assigned to it."""

    device_id: str
    alarm_id: str
    snapshot_id: str
    bystander: uuid.UUID
    credential_id: str


async def make_target(
    api: devices_pb2_grpc.DeviceServiceStub,
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    admin: Account,
) -> Target:
    device_id, _ = await factories.make_device(conn, client_id)
    alarm_id = await make_alarm(conn, client_id, device_id)
    snapshot = await api.CreateDeviceSnapshot(
        D.CreateDeviceSnapshotRequest(device_id=str(device_id), reason="baseline"),
        metadata=admin.md,
    )
    bystander = await factories.make_user(conn, client_id, role="viewer")
    await api.AssignDevice(
        D.AssignDeviceRequest(device_id=str(device_id), user_id=str(bystander)),
        metadata=admin.md,
    )
    credential = await api.CreateDeviceCredential(
        D.CreateDeviceCredentialRequest(device_id=str(device_id)), metadata=admin.md
    )
    return Target(
        str(device_id), alarm_id, snapshot.snapshot.id, bystander, credential.credential.id
    )


def calls(
    api: devices_pb2_grpc.DeviceServiceStub, target: Target, other_user: uuid.UUID
) -> dict[str, Callable[[Account], Awaitable[Any]]]:
    device = target.device_id

    def update(paths: list[str], **fields: Any) -> Callable[[Account], Awaitable[Any]]:
        request = D.UpdateDeviceRequest(
            device=D.Device(id=device, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        return lambda who: api.UpdateDevice(request, metadata=who.md)

    metadata = D.Device()
    metadata.metadata.update({"site": "north"})
    return {
        "get": lambda who: api.GetDevice(D.GetDeviceRequest(id=device), metadata=who.md),
        "list_alarms": lambda who: api.ListDeviceAlarms(
            D.ListDeviceAlarmsRequest(device_id=device), metadata=who.md
        ),
        "clear_alarm": lambda who: api.ClearDeviceAlarm(
            D.ClearDeviceAlarmRequest(device_id=device, alarm_id=target.alarm_id),
            metadata=who.md,
        ),
        "rename": update(["name"], name="renamed"),
        "set_metadata": update(["metadata.site"], metadata=metadata.metadata),
        "snapshot": lambda who: api.CreateDeviceSnapshot(
            D.CreateDeviceSnapshotRequest(device_id=device, reason="mine"), metadata=who.md
        ),
        "restore": lambda who: api.RestoreDeviceSnapshot(
            D.RestoreDeviceSnapshotRequest(device_id=device, snapshot_id=target.snapshot_id),
            metadata=who.md,
        ),
        "record_location": lambda who: api.RecordDeviceLocation(
            D.RecordDeviceLocationRequest(
                device_id=device, location=D.DeviceLocation(latitude=30.0, longitude=31.2)
            ),
            metadata=who.md,
        ),
        "list_credentials": lambda who: api.ListDeviceCredentials(
            D.ListDeviceCredentialsRequest(device_id=device), metadata=who.md
        ),
        "rotate_credential": lambda who: api.RotateDeviceCredential(
            D.RotateDeviceCredentialRequest(device_id=device, credential_id=target.credential_id),
            metadata=who.md,
        ),
        "revoke_credential": lambda who: api.RevokeDeviceCredential(
            D.RevokeDeviceCredentialRequest(device_id=device, credential_id=target.credential_id),
            metadata=who.md,
        ),
        "create_credential": lambda who: api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(device_id=device), metadata=who.md
        ),
        "set_status": update(["status"], status=D.DEVICE_STATUS_DISABLED),
        "assign": lambda who: api.AssignDevice(
            D.AssignDeviceRequest(
                device_id=device, user_id=str(other_user), access_level=D.ACCESS_LEVEL_MANAGE
            ),
            metadata=who.md,
        ),
        "unassign": lambda who: api.UnassignDevice(
            D.UnassignDeviceRequest(device_id=device, user_id=str(target.bystander)),
            metadata=who.md,
        ),
        "delete": lambda who: api.DeleteDevice(D.DeleteDeviceRequest(id=device), metadata=who.md),
    }


async def test_every_role_and_level_gets_exactly_its_actions(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    staff = await make_staff(grpc_server, owner_conn, "admin")
    admin = tenant.users["client"]
    api = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    cases: list[tuple[Account, AccessLevel | None]] = [(admin, None), (staff, None)]
    for role in ("operator", "viewer"):
        cases += [(tenant.users[role], level) for level in (*LEVELS, None)]
    outcomes: dict[tuple[str, str, str], grpc.StatusCode] = {}
    wanted: dict[tuple[str, str, str], grpc.StatusCode] = {}
    for who, level in cases:
        target = await make_target(api, owner_conn, tenant.client_id, admin)
        if level is not None:
            await api.AssignDevice(
                D.AssignDeviceRequest(
                    device_id=target.device_id,
                    user_id=str(who.user_id),
                    access_level=LEVELS[level],
                ),
                metadata=admin.md,
            )
        other = await factories.make_user(owner_conn, tenant.client_id, role="operator")
        label = level.name if level else "unassigned"
        for action, call in calls(api, target, other).items():
            outcomes[(who.role, label, action)] = await code_of(call(who))
            wanted[(who.role, label, action)] = expected(who.role, level)[action]
        if expected(who.role, level)["delete"] is not OK:
            await _assert_untouched(
                api, owner_conn, admin, target, other, expected(who.role, level)
            )
        if level is not None:  # the assignment is still as it was: no self-promotion
            listed = await api.ListDeviceAssignments(
                D.ListDeviceAssignmentsRequest(device_id=target.device_id), metadata=admin.md
            )
            mine = [a for a in listed.assignments if a.user_id == str(who.user_id)]
            assert [a.access_level for a in mine] == [LEVELS[level]]
    assert outcomes == wanted


async def _assert_untouched(
    api: devices_pb2_grpc.DeviceServiceStub,
    conn: asyncpg.Connection,
    admin: Account,
    target: Target,
    other: uuid.UUID,
    allowed: dict[str, grpc.StatusCode],
) -> None:
    """A refused change changed nothing: status, assignments, and (unless allowed) the name,
    metadata, locations and alarms."""
    device = (
        await api.GetDevice(D.GetDeviceRequest(id=target.device_id), metadata=admin.md)
    ).device
    assert device.status == D.DEVICE_STATUS_ACTIVE
    assignees = {
        a.user_id
        for a in (
            await api.ListDeviceAssignments(
                D.ListDeviceAssignmentsRequest(device_id=target.device_id), metadata=admin.md
            )
        ).assignments
    }
    assert str(target.bystander) in assignees
    assert str(other) not in assignees
    if allowed["rename"] is not OK:
        assert device.name != "renamed"
        assert "site" not in dict(device.metadata)
        assert not device.HasField("latest_location")
    if allowed["rotate_credential"] is not OK:  # the credential is as it was made
        credentials = (
            await api.ListDeviceCredentials(
                D.ListDeviceCredentialsRequest(device_id=target.device_id), metadata=admin.md
            )
        ).credentials
        assert [
            (c.id, c.HasField("rotate_time"), c.HasField("revoke_time")) for c in credentials
        ] == [(target.credential_id, False, False)]
    if allowed["clear_alarm"] is not OK:
        async with tenant_transaction(conn, None, staff=True):
            cleared = await conn.fetchval(
                "SELECT cleared_at FROM device_alarms WHERE id = $1", uuid.UUID(target.alarm_id)
            )
        assert cleared is None


async def test_a_refusal_names_the_level_and_the_action(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin, operator = tenant.users["client"], tenant.users["operator"]
    api = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    device_id, _ = await factories.make_device(owner_conn, tenant.client_id)
    await api.AssignDevice(
        D.AssignDeviceRequest(
            device_id=str(device_id),
            user_id=str(operator.user_id),
            access_level=D.ACCESS_LEVEL_OPERATE,
        ),
        metadata=admin.md,
    )
    rename = D.UpdateDeviceRequest(
        device=D.Device(id=str(device_id), name="n"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]),
    )
    try:
        await api.UpdateDevice(rename, metadata=operator.md)
    except grpc.aio.AioRpcError as exc:
        code, details = error_of(exc)
        message = exc.details() or ""
    else:
        raise AssertionError("an OPERATE assignment renamed a device")
    assert code == DENIED
    info = details["ErrorInfo"]
    assert info.reason == "ERROR_REASON_PERMISSION_MISSING"
    assert dict(info.metadata) == {
        "device_id": str(device_id),
        "access_level": "OPERATE",
        "action": "update_metadata",
    }
    assert "OPERATE" in message
    assert "MANAGE" in message

    # The level is read per call: raised to MANAGE, the same call succeeds at once ...
    await api.AssignDevice(
        D.AssignDeviceRequest(
            device_id=str(device_id),
            user_id=str(operator.user_id),
            access_level=D.ACCESS_LEVEL_MANAGE,
        ),
        metadata=admin.md,
    )
    assert (await api.UpdateDevice(rename, metadata=operator.md)).device.name == "n"
    # ... and lowered to VIEW, it is refused again.
    await api.AssignDevice(
        D.AssignDeviceRequest(
            device_id=str(device_id),
            user_id=str(operator.user_id),
            access_level=D.ACCESS_LEVEL_VIEW,
        ),
        metadata=admin.md,
    )
    assert await code_of(api.UpdateDevice(rename, metadata=operator.md)) == DENIED


def test_each_level_allows_exactly_its_actions() -> None:
    reads = {DeviceAction.READ}
    operates = reads | {DeviceAction.ACK_ALARMS, DeviceAction.SEND_COMMANDS}
    manages = operates | {
        DeviceAction.UPDATE_METADATA,
        DeviceAction.RECORD_LOCATION,
        DeviceAction.UPDATE_CREDENTIALS,
    }
    assert allowed_actions(AccessLevel.VIEW) == reads
    assert allowed_actions(AccessLevel.OPERATE) == operates
    assert allowed_actions(AccessLevel.MANAGE) == manages
    never = set(DeviceAction) - manages
    assert never == {DeviceAction.CHANGE_STATUS, DeviceAction.DELETE, DeviceAction.ASSIGN}


def test_device_change_rules_check_the_permission_of_their_action() -> None:
    devices = "/lifebox.v1.DeviceService/"
    by_method = {
        "UpdateDevice": DeviceAction.UPDATE_METADATA,
        "CreateDeviceSnapshot": DeviceAction.UPDATE_METADATA,
        "RestoreDeviceSnapshot": DeviceAction.UPDATE_METADATA,
        "RecordDeviceLocation": DeviceAction.RECORD_LOCATION,
        "ClearDeviceAlarm": DeviceAction.ACK_ALARMS,
        "DeleteDevice": DeviceAction.DELETE,
        "AssignDevice": DeviceAction.ASSIGN,
        "UnassignDevice": DeviceAction.ASSIGN,
        "CreateDeviceCredential": DeviceAction.UPDATE_CREDENTIALS,
        "ListDeviceCredentials": DeviceAction.UPDATE_CREDENTIALS,
        "RotateDeviceCredential": DeviceAction.UPDATE_CREDENTIALS,
        "RevokeDeviceCredential": DeviceAction.UPDATE_CREDENTIALS,
    }
    for method, action in by_method.items():
        assert METHOD_RULES[devices + method].after_lookup == DEVICE_ACTIONS[action].permission
    changing = {m for m, r in METHOD_RULES.items() if m.startswith(devices) and r.after_lookup}
    assert changing == {devices + m for m in by_method}


def test_credentials_take_a_permission_of_their_own() -> None:
    """devices.credentials, not devices.update: held by default by tenant administrators,
    staff and operators (MANAGE assignments only), never by viewers (issue 13)."""
    assert DEVICE_ACTIONS[DeviceAction.UPDATE_CREDENTIALS].permission == DEVICES_CREDENTIALS
    holders = {r for r, perms in DEFAULT_ROLE_PERMISSIONS.items() if DEVICES_CREDENTIALS in perms}
    assert holders == {"admin", "client", "operator"}
    assert DEVICES_CREDENTIALS in ALL_PERMISSIONS  # super_user holds every permission
    assert DEVICES_CREDENTIALS in CATALOGUE
