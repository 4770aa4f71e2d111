"""Which permission each RPC needs: one declarative table, checked by the interceptor.

A ``lifebox.*`` method missing from :data:`METHOD_RULES` is refused (fail closed), and a
test checks that every registered method has a rule. Permissions are the strings seeded in
``role_permissions``; what a role holds is data, read per call, so UpdateRolePermissions
takes effect on the next call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Access(StrEnum):
    """Who may call a method at all."""

    PUBLIC = "public"  # no token needed; a token, if sent and valid, is still used
    AUTHENTICATED = "authenticated"  # any valid access token; plus `permission` if set


@dataclass(frozen=True)
class Rule:
    """What calling one method takes.

    ``permission`` is checked by the interceptor before the handler runs. ``after_lookup``
    is a permission the *handler* checks once it has found the named resource in the
    caller's scope, so naming another tenant's resource reads NOT_FOUND, never
    PERMISSION_DENIED (which would confirm it exists).
    """

    access: Access
    permission: str | None = None
    after_lookup: str | None = None


USERS_READ = "users.read"
USERS_WRITE = "users.write"
ROLES_READ = "roles.read"
ROLES_WRITE = "roles.write"
CLIENTS_READ = "clients.read"
CLIENTS_CREATE = "clients.create"
CLIENTS_WRITE = "clients.write"
DEVICES_READ = "devices.read"
DEVICES_WRITE = "devices.write"
TELEMETRY_READ = "telemetry.read"
ALARMS_READ = "alarms.read"
ALARMS_ACK = "alarms.ack"

# Every permission the auth and client APIs check, with what it allows (ListPermissions).
CATALOGUE: dict[str, str] = {
    USERS_READ: "Read users (of one's own client; staff: of every client).",
    USERS_WRITE: "Create, update and delete users, up to one's own role.",
    ROLES_READ: "Read roles and their permissions.",
    ROLES_WRITE: "Change which permissions a role has.",
    CLIENTS_READ: "Read clients (one's own; staff: every client).",
    CLIENTS_CREATE: "Create clients.",
    CLIENTS_WRITE: "Update, suspend and resume clients.",
    DEVICES_READ: "Read devices (all of one's client's; operators and viewers: assigned ones).",
    DEVICES_WRITE: "Register, update, delete and assign devices; record their locations.",
    TELEMETRY_READ: "Read the telemetry of the devices one may read.",
    ALARMS_READ: "Read alarms, including devices' hardware alarms.",
    ALARMS_ACK: "Acknowledge and clear alarms.",
}

_PUBLIC = Rule(Access.PUBLIC)
_SIGNED_IN = Rule(Access.AUTHENTICATED)

_AUTH = "/lifebox.v1.AuthService/"
_CLIENTS = "/lifebox.v1.ClientService/"
_DEVICES = "/lifebox.v1.DeviceService/"
_TELEMETRY = "/lifebox.v1.TelemetryService/"
_DEVICE_READ = Rule(Access.AUTHENTICATED, DEVICES_READ)
# Changes to one device: found in the caller's scope first, so another tenant's device
# reads NOT_FOUND, then devices.write is checked.
_DEVICE_CHANGE = Rule(Access.AUTHENTICATED, DEVICES_READ, after_lookup=DEVICES_WRITE)
_TELEMETRY_READ = Rule(Access.AUTHENTICATED, TELEMETRY_READ)

METHOD_RULES: dict[str, Rule] = {
    _AUTH + "Login": _PUBLIC,
    _AUTH + "RefreshToken": _PUBLIC,
    _AUTH + "Logout": _PUBLIC,
    _AUTH + "RequestPasswordReset": _PUBLIC,
    _AUTH + "ResetPassword": _PUBLIC,
    _AUTH + "ChangePassword": _SIGNED_IN,
    _AUTH + "GetMe": _SIGNED_IN,
    _AUTH + "CreateUser": Rule(Access.AUTHENTICATED, USERS_WRITE),
    _AUTH + "GetUser": Rule(Access.AUTHENTICATED, USERS_READ),
    _AUTH + "ListUsers": Rule(Access.AUTHENTICATED, USERS_READ),
    _AUTH + "UpdateUser": Rule(Access.AUTHENTICATED, USERS_READ, after_lookup=USERS_WRITE),
    _AUTH + "DeleteUser": Rule(Access.AUTHENTICATED, USERS_READ, after_lookup=USERS_WRITE),
    _AUTH + "ListRoles": Rule(Access.AUTHENTICATED, ROLES_READ),
    _AUTH + "ListPermissions": Rule(Access.AUTHENTICATED, ROLES_READ),
    _AUTH + "UpdateRolePermissions": Rule(Access.AUTHENTICATED, ROLES_WRITE),
    _CLIENTS + "CreateClient": Rule(Access.AUTHENTICATED, CLIENTS_CREATE),
    _CLIENTS + "GetClient": Rule(Access.AUTHENTICATED, CLIENTS_READ),
    _CLIENTS + "ListClients": Rule(Access.AUTHENTICATED, CLIENTS_READ),
    _CLIENTS + "UpdateClient": Rule(Access.AUTHENTICATED, CLIENTS_READ, after_lookup=CLIENTS_WRITE),
    _CLIENTS + "SuspendClient": Rule(
        Access.AUTHENTICATED, CLIENTS_READ, after_lookup=CLIENTS_WRITE
    ),
    _CLIENTS + "ResumeClient": Rule(Access.AUTHENTICATED, CLIENTS_READ, after_lookup=CLIENTS_WRITE),
    _DEVICES + "CreateDevice": Rule(Access.AUTHENTICATED, DEVICES_WRITE),
    _DEVICES + "BatchCreateDevices": Rule(Access.AUTHENTICATED, DEVICES_WRITE),
    _DEVICES + "GetDevice": _DEVICE_READ,
    _DEVICES + "ListDevices": _DEVICE_READ,
    _DEVICES + "UpdateDevice": _DEVICE_CHANGE,
    _DEVICES + "DeleteDevice": _DEVICE_CHANGE,
    _DEVICES + "ListDeviceHistory": _DEVICE_READ,
    _DEVICES + "CreateDeviceSnapshot": _DEVICE_CHANGE,
    _DEVICES + "ListDeviceSnapshots": _DEVICE_READ,
    _DEVICES + "RestoreDeviceSnapshot": _DEVICE_CHANGE,
    _DEVICES + "RecordDeviceLocation": _DEVICE_CHANGE,
    _DEVICES + "ListDeviceLocations": _DEVICE_READ,
    _DEVICES + "AssignDevice": _DEVICE_CHANGE,
    _DEVICES + "UnassignDevice": _DEVICE_CHANGE,
    _DEVICES + "ListDeviceAssignments": _DEVICE_READ,
    _DEVICES + "ListDeviceAlarms": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _DEVICES + "ClearDeviceAlarm": Rule(Access.AUTHENTICATED, ALARMS_READ, after_lookup=ALARMS_ACK),
    _TELEMETRY + "QueryTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "AggregateTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "GetLatestTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "StreamTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "ListUnknownFields": _TELEMETRY_READ,
    _TELEMETRY + "ListDataPoints": _TELEMETRY_READ,
}

# Services outside our API (health, reflection) need no token.
UNGUARDED_PREFIXES = ("/grpc.",)
