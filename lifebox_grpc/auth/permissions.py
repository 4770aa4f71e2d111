"""Which permission each RPC needs: one declarative table, checked by the interceptor.

A ``lifebox.*`` method missing from :data:`METHOD_RULES` is refused (fail closed), and a
test checks that every registered method has a rule. Permissions are the strings seeded in
``role_permissions``; what a role holds is data, read per call, so UpdateRolePermissions
takes effect on the next call.

Operators and viewers act on a device only through their assignment to it, whose access level
(:class:`AccessLevel`) says which :class:`DeviceAction` they may take: :data:`DEVICE_ACTIONS`
is that one table, for every service that acts on a device.
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
DEVICES_UPDATE = "devices.update"
TELEMETRY_READ = "telemetry.read"
ALARMS_READ = "alarms.read"
ALARMS_ACK = "alarms.ack"
COMMANDS_SEND = "commands.send"
ALARMS_WRITE = "alarms.write"  # --- alarms (issue 15)
# --- credentials (issue 13) ---
DEVICES_CREDENTIALS = "devices.credentials"
# --- end credentials (issue 13) ---
# --- billing (issue 16) ---
BILLING_READ = "billing.read"
BILLING_PAY = "billing.pay"
BILLING_WRITE = "billing.write"
# --- end billing (issue 16) ---

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
    DEVICES_WRITE: (
        "Register, delete and assign devices and change their status (never operators or "
        "viewers: no assignment level allows it)."
    ),
    DEVICES_UPDATE: (
        "Update a device's metadata, record its locations, take and restore its snapshots "
        "(operators and viewers: on devices assigned to them with MANAGE)."
    ),
    # --- credentials (issue 13) ---
    DEVICES_CREDENTIALS: (
        "Create, list, rotate and revoke devices' broker credentials (operators and viewers: "
        "of devices assigned to them with MANAGE)."
    ),
    # --- end credentials (issue 13) ---
    # --- billing (issue 16) ---
    BILLING_READ: "Read one's client's billing: subscription, usage, prices, ledger, payments.",
    BILLING_PAY: "Start a Fawry payment for one's client.",
    BILLING_WRITE: (
        "Manage plans, prices, exchange rates, subscriptions, ledger adjustments and refunds "
        "(platform staff only, whatever the role holds)."
    ),
    # --- end billing (issue 16) ---
    TELEMETRY_READ: "Read the telemetry of the devices one may read.",
    ALARMS_READ: "Read alarms, including devices' hardware alarms.",
    ALARMS_WRITE: "Create, change, enable and delete alarm rules.",  # --- alarms (issue 15)
    ALARMS_ACK: (
        "Acknowledge and clear alarms (operators and viewers: of devices assigned to them "
        "with OPERATE or MANAGE)."
    ),
    COMMANDS_SEND: (
        "Send devices the commands granted to one (operators and viewers: to devices "
        "assigned to them with OPERATE or MANAGE)."
    ),
}


class AccessLevel(StrEnum):
    """An assignment's access level (``user_device_assignments.access_level``), lowest first."""

    VIEW = "view"
    OPERATE = "operate"
    MANAGE = "manage"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]


_LEVEL_RANK = {AccessLevel.VIEW: 1, AccessLevel.OPERATE: 2, AccessLevel.MANAGE: 3}


class DeviceAction(StrEnum):
    """What a caller does to one device."""

    READ = "read"
    ACK_ALARMS = "ack_alarms"
    SEND_COMMANDS = "send_commands"
    UPDATE_METADATA = "update_metadata"
    RECORD_LOCATION = "record_location"
    UPDATE_CREDENTIALS = "update_credentials"
    CHANGE_STATUS = "change_status"
    DELETE = "delete"
    ASSIGN = "assign"


@dataclass(frozen=True)
class ActionRule:
    """What one :class:`DeviceAction` takes once the device is found in the caller's scope.

    ``permission``: what the caller's role must hold (None: only the method's own read
    permission, checked before the lookup). ``least_level``: for operators and viewers, the
    lowest access level of their assignment that allows it; None: no level does. Client
    administrators and staff need only the permission.
    """

    permission: str | None
    least_level: AccessLevel | None
    wording: str  # "<verb> it": how a refusal names the action

    def allows(self, level: AccessLevel) -> bool:
        return self.least_level is not None and level.rank >= self.least_level.rank


# The one meaning of an access level: VIEW reads; OPERATE also clears and acknowledges alarms
# and sends the commands granted to the user; MANAGE also updates the device's metadata,
# location and credentials. No level deletes, reassigns or changes a device's status (a
# decommission is a soft delete), whatever the role holds.
DEVICE_ACTIONS: dict[DeviceAction, ActionRule] = {
    DeviceAction.READ: ActionRule(None, AccessLevel.VIEW, "read it"),
    DeviceAction.ACK_ALARMS: ActionRule(
        ALARMS_ACK, AccessLevel.OPERATE, "clear or acknowledge its alarms"
    ),
    DeviceAction.SEND_COMMANDS: ActionRule(COMMANDS_SEND, AccessLevel.OPERATE, "send it commands"),
    DeviceAction.UPDATE_METADATA: ActionRule(
        DEVICES_UPDATE, AccessLevel.MANAGE, "update its metadata"
    ),
    DeviceAction.RECORD_LOCATION: ActionRule(
        DEVICES_UPDATE, AccessLevel.MANAGE, "record its location"
    ),
    DeviceAction.UPDATE_CREDENTIALS: ActionRule(  # credentials (issue 13): its own permission
        DEVICES_CREDENTIALS, AccessLevel.MANAGE, "manage its broker credentials"
    ),
    DeviceAction.CHANGE_STATUS: ActionRule(DEVICES_WRITE, None, "change its status"),
    DeviceAction.DELETE: ActionRule(DEVICES_WRITE, None, "delete it"),
    DeviceAction.ASSIGN: ActionRule(DEVICES_WRITE, None, "assign it to users"),
}


def allowed_actions(level: AccessLevel) -> frozenset[DeviceAction]:
    """Every action an assignment at ``level`` allows."""
    return frozenset(a for a, rule in DEVICE_ACTIONS.items() if rule.allows(level))


_PUBLIC = Rule(Access.PUBLIC)
_SIGNED_IN = Rule(Access.AUTHENTICATED)

_AUTH = "/lifebox.v1.AuthService/"
_CLIENTS = "/lifebox.v1.ClientService/"
_DEVICES = "/lifebox.v1.DeviceService/"
_TELEMETRY = "/lifebox.v1.TelemetryService/"
_ALARMS = "/lifebox.v1.AlarmService/"  # --- alarms (issue 15)
_DEVICE_READ = Rule(Access.AUTHENTICATED, DEVICES_READ)
_TELEMETRY_READ = Rule(Access.AUTHENTICATED, TELEMETRY_READ)


def _on_device(action: DeviceAction, read: str = DEVICES_READ) -> Rule:
    """A change to one device: found in the caller's scope first (another tenant's device
    reads NOT_FOUND), then the action's permission and, for operators and viewers, their
    assignment's level are checked (:data:`DEVICE_ACTIONS`; the handler names the action).
    UpdateDevice of a status takes CHANGE_STATUS (devices.write) as well."""
    return Rule(Access.AUTHENTICATED, read, after_lookup=DEVICE_ACTIONS[action].permission)


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
    _DEVICES + "UpdateDevice": _on_device(DeviceAction.UPDATE_METADATA),
    _DEVICES + "DeleteDevice": _on_device(DeviceAction.DELETE),
    _DEVICES + "ListDeviceHistory": _DEVICE_READ,
    _DEVICES + "CreateDeviceSnapshot": _on_device(DeviceAction.UPDATE_METADATA),
    _DEVICES + "ListDeviceSnapshots": _DEVICE_READ,
    _DEVICES + "RestoreDeviceSnapshot": _on_device(DeviceAction.UPDATE_METADATA),
    _DEVICES + "RecordDeviceLocation": _on_device(DeviceAction.RECORD_LOCATION),
    _DEVICES + "ListDeviceLocations": _DEVICE_READ,
    _DEVICES + "AssignDevice": _on_device(DeviceAction.ASSIGN),
    _DEVICES + "UnassignDevice": _on_device(DeviceAction.ASSIGN),
    _DEVICES + "ListDeviceAssignments": _DEVICE_READ,
    _DEVICES + "ListDeviceAlarms": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _DEVICES + "ClearDeviceAlarm": _on_device(DeviceAction.ACK_ALARMS, ALARMS_READ),
    # --- credentials (issue 13): every credential RPC, listing included, takes the permission
    # and (operators, viewers) MANAGE, checked after the device is found ---
    _DEVICES + "CreateDeviceCredential": _on_device(DeviceAction.UPDATE_CREDENTIALS),
    _DEVICES + "ListDeviceCredentials": _on_device(DeviceAction.UPDATE_CREDENTIALS),
    _DEVICES + "RotateDeviceCredential": _on_device(DeviceAction.UPDATE_CREDENTIALS),
    _DEVICES + "RevokeDeviceCredential": _on_device(DeviceAction.UPDATE_CREDENTIALS),
    # --- end credentials (issue 13) ---
    # --- presence (issue 13) ---
    _DEVICES + "ListDeviceConnections": _DEVICE_READ,
    _DEVICES + "StreamDeviceEvents": _DEVICE_READ,
    # --- end presence (issue 13) ---
    # --- billing (issue 16): changes name a client or a resource first (another tenant's
    # reads NOT_FOUND), then take billing.write (and platform staff) or billing.pay ---
    **{
        "/lifebox.v1.BillingService/" + name: Rule(Access.AUTHENTICATED, BILLING_READ, after)
        for name, after in (
            ("ListPlans", None),
            ("GetSubscription", None),
            ("ListSubscriptions", None),
            ("ListCustomerPrices", None),
            ("GetUsage", None),
            ("GetBillingAccount", None),
            ("ListCreditTransactions", None),
            ("ListExchangeRates", None),
            ("ListPostpaidPeriods", None),
            ("GetFawryPayment", None),
            ("ListFawryPayments", None),
            ("ListFawryNotifications", None),
            ("CreateSubscription", BILLING_WRITE),
            ("ChangeSubscriptionPlan", BILLING_WRITE),
            ("CancelSubscription", BILLING_WRITE),
            ("CreateCustomerPrice", BILLING_WRITE),
            ("CreateCreditAdjustment", BILLING_WRITE),
            ("ReverseCreditTransaction", BILLING_WRITE),
            ("RefundFawryPayment", BILLING_WRITE),
            ("CreateFawryPayment", BILLING_PAY),
            ("ListFawryCards", None),
            ("VoidPostpaidPeriod", BILLING_WRITE),
            ("CreateFawryCardCheckout", BILLING_PAY),
            ("DeleteFawryCard", BILLING_PAY),
        )
    },
    "/lifebox.v1.BillingService/CreatePlan": Rule(Access.AUTHENTICATED, BILLING_WRITE),
    "/lifebox.v1.BillingService/UpdatePlan": Rule(Access.AUTHENTICATED, BILLING_WRITE),
    "/lifebox.v1.BillingService/CreateExchangeRate": Rule(Access.AUTHENTICATED, BILLING_WRITE),
    # --- end billing (issue 16) ---
    _TELEMETRY + "QueryTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "AggregateTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "GetLatestTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "StreamTelemetry": _TELEMETRY_READ,
    _TELEMETRY + "ListUnknownFields": _TELEMETRY_READ,
    _TELEMETRY + "ListDataPoints": _TELEMETRY_READ,
    # --- alarms (issue 15): rules are the tenant's configuration; events are seen through
    # their devices and acknowledged with alarms.ack on the device (OPERATE or more) ---
    _ALARMS + "CreateAlarmRule": Rule(Access.AUTHENTICATED, ALARMS_WRITE),
    _ALARMS + "GetAlarmRule": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _ALARMS + "ListAlarmRules": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _ALARMS + "UpdateAlarmRule": Rule(Access.AUTHENTICATED, ALARMS_READ, after_lookup=ALARMS_WRITE),
    _ALARMS + "DeleteAlarmRule": Rule(Access.AUTHENTICATED, ALARMS_READ, after_lookup=ALARMS_WRITE),
    _ALARMS + "SetAlarmRuleEnabled": Rule(
        Access.AUTHENTICATED, ALARMS_READ, after_lookup=ALARMS_WRITE
    ),
    _ALARMS + "ListAlarmEvents": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _ALARMS + "GetAlarmEvent": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _ALARMS + "AcknowledgeAlarm": Rule(Access.AUTHENTICATED, ALARMS_READ, after_lookup=ALARMS_ACK),
    _ALARMS + "StreamAlarmEvents": Rule(Access.AUTHENTICATED, ALARMS_READ),
    _ALARMS + "TestAlarmRule": Rule(Access.AUTHENTICATED, ALARMS_READ, after_lookup=TELEMETRY_READ),
    # --- end alarms (issue 15) ---
}

# --- commands (issue 14) ---
COMMANDS_READ = "commands.read"
COMMANDS_DELEGATE = "commands.delegate"
COMMANDS_TEMPLATES_WRITE = "commands.templates_write"
CATALOGUE.update(
    {
        COMMANDS_READ: (
            "Read command templates and the commands, trails and live updates of the devices "
            "one may read."
        ),
        COMMANDS_DELEGATE: (
            "Grant and revoke any command permission within one's client (others delegate "
            "only through a grant with can_delegate)."
        ),
        COMMANDS_TEMPLATES_WRITE: "Create, update and disable one's client's command templates.",
    }
)
_COMMANDS = "/lifebox.v1.CommandService/"
_COMMANDS_READ = Rule(Access.AUTHENTICATED, COMMANDS_READ)
# Sending and cancelling find the device (or command) first: another tenant's is NOT_FOUND;
# then commands.send, the assignment's level and the user's grant (services/commands/access).
_COMMANDS_SEND = Rule(Access.AUTHENTICATED, COMMANDS_READ, after_lookup=COMMANDS_SEND)
METHOD_RULES.update(
    {
        _COMMANDS + "ListCommandTemplates": _COMMANDS_READ,
        _COMMANDS + "GetCommandTemplate": _COMMANDS_READ,
        _COMMANDS + "CreateCommandTemplate": Rule(Access.AUTHENTICATED, COMMANDS_TEMPLATES_WRITE),
        _COMMANDS + "UpdateCommandTemplate": Rule(
            Access.AUTHENTICATED, COMMANDS_READ, after_lookup=COMMANDS_TEMPLATES_WRITE
        ),
        _COMMANDS + "ListCommandPermissions": _COMMANDS_READ,
        # Delegation needs no permission of its own: a grant with can_delegate is the right
        # (the handler checks it, or that the caller administers the client).
        _COMMANDS + "GrantCommandPermission": _SIGNED_IN,
        _COMMANDS + "ListCommandGrants": _SIGNED_IN,
        _COMMANDS + "RevokeCommandGrant": _SIGNED_IN,
        _COMMANDS + "SendCommand": _COMMANDS_SEND,
        _COMMANDS + "BatchSendCommand": _COMMANDS_SEND,
        _COMMANDS + "GetCommand": _COMMANDS_READ,
        _COMMANDS + "ListCommands": _COMMANDS_READ,
        _COMMANDS + "CancelCommand": _COMMANDS_SEND,
        _COMMANDS + "ListCommandExecutions": _COMMANDS_READ,
        _COMMANDS + "StreamCommandUpdates": _COMMANDS_READ,
    }
)
# --- end commands ---

# --- dashboards (issue 17): a page is found first (another tenant's, or one not shared
# with the caller, reads NOT_FOUND), then dashboards.write where the RPC edits; a user's own
# layout of a page takes only dashboards.read; page data takes telemetry.read too ---
DASHBOARDS_READ = "dashboards.read"
DASHBOARDS_WRITE = "dashboards.write"
CATALOGUE.update(
    {
        DASHBOARDS_READ: (
            "Read the quick-view pages one owns or that are shared with one (client "
            "administrators: the client's), their widgets and data, and arrange them."
        ),
        DASHBOARDS_WRITE: "Create pages, edit them (owner or edit share), share and delete them.",
    }
)
_DASHBOARDS = "/lifebox.v1.DashboardService/"
_DASH_READ = Rule(Access.AUTHENTICATED, DASHBOARDS_READ)
_DASH_EDIT = Rule(Access.AUTHENTICATED, DASHBOARDS_READ, after_lookup=DASHBOARDS_WRITE)
METHOD_RULES.update(
    {
        _DASHBOARDS + "CreatePage": Rule(Access.AUTHENTICATED, DASHBOARDS_WRITE),
        _DASHBOARDS + "GetPage": _DASH_READ,
        _DASHBOARDS + "ListPages": _DASH_READ,
        _DASHBOARDS + "UpdatePage": _DASH_EDIT,
        _DASHBOARDS + "DeletePage": _DASH_EDIT,
        _DASHBOARDS + "SharePage": _DASH_EDIT,
        _DASHBOARDS + "RevokePageShare": _DASH_EDIT,
        _DASHBOARDS + "ListPageShares": _DASH_READ,
        _DASHBOARDS + "CreateWidget": _DASH_EDIT,
        _DASHBOARDS + "GetWidget": _DASH_READ,
        _DASHBOARDS + "ListWidgets": _DASH_READ,
        _DASHBOARDS + "UpdateWidget": _DASH_EDIT,
        _DASHBOARDS + "DeleteWidget": _DASH_EDIT,
        _DASHBOARDS + "GetPageLayout": _DASH_READ,
        _DASHBOARDS + "UpdatePageLayout": _DASH_READ,
        _DASHBOARDS + "DeletePageLayout": _DASH_READ,
        _DASHBOARDS + "GetPageData": Rule(
            Access.AUTHENTICATED, DASHBOARDS_READ, after_lookup=TELEMETRY_READ
        ),
    }
)
# --- end dashboards (issue 17) ---

# --- calculations (issue 17): a formula is found first (another tenant's reads NOT_FOUND),
# then formulas.write where the RPC changes it; a dry run takes telemetry.read on its device ---
FORMULAS_READ = "formulas.read"
FORMULAS_WRITE = "formulas.write"
CATALOGUE.update(
    {
        FORMULAS_READ: "Read the client's calculation formulas and try them on stored readings.",
        FORMULAS_WRITE: "Create, change, enable and delete calculation formulas.",
    }
)
_CALCULATIONS = "/lifebox.v1.CalculationService/"
_FORMULA_EDIT = Rule(Access.AUTHENTICATED, FORMULAS_READ, after_lookup=FORMULAS_WRITE)
METHOD_RULES.update(
    {
        _CALCULATIONS + "CreateFormula": Rule(Access.AUTHENTICATED, FORMULAS_WRITE),
        _CALCULATIONS + "GetFormula": Rule(Access.AUTHENTICATED, FORMULAS_READ),
        _CALCULATIONS + "ListFormulas": Rule(Access.AUTHENTICATED, FORMULAS_READ),
        _CALCULATIONS + "UpdateFormula": _FORMULA_EDIT,
        _CALCULATIONS + "DeleteFormula": _FORMULA_EDIT,
        _CALCULATIONS + "EnableFormula": _FORMULA_EDIT,
        _CALCULATIONS + "TestFormula": Rule(
            Access.AUTHENTICATED, FORMULAS_READ, after_lookup=TELEMETRY_READ
        ),
    }
)
# --- end calculations (issue 17) ---

# --- files (issue 17) ---
FILES_READ = "files.read"
FILES_WRITE = "files.write"
CATALOGUE.update(
    {
        FILES_READ: (
            "Read and download the files one may see (one's own, the tenant's, those of pages "
            "shared with one) and the tenant's file quota."
        ),
        FILES_WRITE: "Upload files, and delete one's own (client administrators: any).",
    }
)
_FILES = "/lifebox.v1.FileService/"
METHOD_RULES.update(
    {
        _FILES + "UploadFile": Rule(Access.AUTHENTICATED, FILES_WRITE),
        _FILES + "GetFile": Rule(Access.AUTHENTICATED, FILES_READ),
        _FILES + "ListFiles": Rule(Access.AUTHENTICATED, FILES_READ),
        _FILES + "DownloadFile": Rule(Access.AUTHENTICATED, FILES_READ),
        # Found first (another tenant's reads NOT_FOUND), then files.write and ownership.
        _FILES + "DeleteFile": Rule(Access.AUTHENTICATED, FILES_READ, after_lookup=FILES_WRITE),
        _FILES + "GetFileQuota": Rule(Access.AUTHENTICATED, FILES_READ),
    }
)
# --- end files (issue 17) ---

# Services outside our API (health, reflection) need no token.
UNGUARDED_PREFIXES = ("/grpc.",)
