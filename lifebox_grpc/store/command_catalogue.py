"""The platform's reference data: roles, their default permissions, command types and the
global command templates (each with a JSON Schema for its parameters).

Plain data, seeded by :mod:`lifebox_grpc.store.seeds`. Codes are stable identifiers that
devices and clients see; change a schema freely, never a code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonSchema = dict[str, Any]


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    is_platform_staff: bool
    rank: int


@dataclass(frozen=True)
class CommandPermission:
    code: str
    name: str
    description: str
    category: str
    risk_level: str = "low"
    requires_confirmation: bool = False


@dataclass(frozen=True)
class CommandTemplate:
    code: str
    name: str
    description: str
    permission: str
    parameters: JsonSchema
    defaults: dict[str, Any] = field(default_factory=dict)
    timeout_s: int = 60
    max_retries: int = 3


ROLES: tuple[Role, ...] = (
    Role("super_user", "Platform owner: everything, every tenant.", True, 100),
    Role("admin", "Platform staff: manages clients, users and devices of every tenant.", True, 80),
    Role("client", "A tenant's administrator: everything within the tenant.", False, 60),
    Role(
        "operator", "Operates the devices assigned to them: reads data, sends commands.", False, 40
    ),
    Role("viewer", "Reads the devices assigned to them.", False, 20),
)

_READ_MOST = (
    "devices.read",
    "telemetry.read",
    "alarms.read",
    "dashboards.read",
    "files.read",
    "commands.read",
)
# Operators and viewers update only devices assigned to them with MANAGE (the access level
# caps what the role allows: auth/permissions.py DEVICE_ACTIONS).
_ASSIGNED_UPDATE = ("devices.update",)
_OPERATE = (
    *_READ_MOST,
    *_ASSIGNED_UPDATE,
    # --- credentials (issue 13): devices' broker credentials (operators: MANAGE only) ---
    "devices.credentials",
    "commands.send",
    "alarms.ack",
    "dashboards.write",
    "files.write",
)
_TENANT_ADMIN = (
    *_OPERATE,
    "users.read",
    "users.write",
    "roles.read",
    "clients.read",
    "devices.write",
    "alarms.write",
    "commands.delegate",
    "commands.templates_write",
    "billing.read",
    "billing.pay",
    "formulas.read",
    "formulas.write",
    "ingest.rejects_read",
)
_STAFF = (
    *_TENANT_ADMIN,
    "clients.create",
    "clients.write",
    "billing.write",
    "platform.read",
)

# Default holders of each permission. A permission seen for the first time gets these; after
# that, who holds it is data (UpdateRolePermissions), and seeding leaves it alone.
# super_user holds every permission, always.
DEFAULT_ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "admin": _STAFF,
    "client": _TENANT_ADMIN,
    "operator": _OPERATE,
    "viewer": (*_READ_MOST, *_ASSIGNED_UPDATE),
}
SUPER_USER_ONLY = ("roles.write", "platform.write")
ALL_PERMISSIONS: tuple[str, ...] = tuple(
    sorted({p for perms in DEFAULT_ROLE_PERMISSIONS.values() for p in perms} | set(SUPER_USER_ONLY))
)

COMMAND_PERMISSIONS: tuple[CommandPermission, ...] = (
    CommandPermission(
        "basic_control", "Basic control", "Harmless queries and clock sync.", "general"
    ),
    CommandPermission(
        "power_management", "Power management", "Reboot and restart.", "power", "medium"
    ),
    CommandPermission("relay_control", "Relay control", "Switch outputs.", "control", "medium"),
    CommandPermission(
        "configuration", "Configuration", "Change device settings.", "configuration", "medium"
    ),
    CommandPermission("diagnostics", "Diagnostics", "Read configuration and logs.", "diagnostics"),
    CommandPermission(
        "metering", "Metering", "Calibrate sensors and reset counters.", "metering", "medium"
    ),
    CommandPermission("alarm_control", "Alarm control", "Device-side alarm settings.", "alarms"),
    CommandPermission(
        "firmware_update", "Firmware update", "Install firmware.", "firmware", "high", True
    ),
    CommandPermission(
        "security", "Security", "Credentials and physical locks.", "security", "high", True
    ),
    CommandPermission(
        "destructive",
        "Destructive",
        "Factory reset and decommissioning: irreversible.",
        "maintenance",
        "high",
        True,
    ),
)


def _object(properties: dict[str, JsonSchema], required: tuple[str, ...] = ()) -> JsonSchema:
    """A closed JSON Schema object: unknown parameters are refused, not forwarded."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _int(minimum: int, maximum: int, description: str) -> JsonSchema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, "description": description}


_RELAY = _int(1, 16, "Relay channel number.")
_CONFIRM = {"const": True, "description": "Must be true: the action is irreversible."}
_URL = {"type": "string", "format": "uri", "pattern": "^https://", "maxLength": 2048}

COMMAND_TEMPLATES: tuple[CommandTemplate, ...] = (
    CommandTemplate(
        "ping", "Ping", "Ask the device to answer at once.", "basic_control", _object({})
    ),
    CommandTemplate(
        "get_status",
        "Get status",
        "Report a full status reading now.",
        "basic_control",
        _object({}),
    ),
    CommandTemplate(
        "sync_time",
        "Sync time",
        "Synchronise the clock with an NTP server.",
        "basic_control",
        _object({"ntp_server": {"type": "string", "maxLength": 253}}),
    ),
    CommandTemplate(
        "set_time",
        "Set time",
        "Set the clock to the given instant.",
        "basic_control",
        _object({"epoch_ms": _int(0, 2**53, "Milliseconds since the Unix epoch.")}, ("epoch_ms",)),
    ),
    CommandTemplate(
        "reboot",
        "Reboot",
        "Restart the device.",
        "power_management",
        _object({"delay_s": _int(0, 3600, "Seconds to wait before rebooting.")}),
        {"delay_s": 0},
        timeout_s=300,
    ),
    CommandTemplate(
        "restart_service",
        "Restart service",
        "Restart one firmware service.",
        "power_management",
        _object({"service": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}}, ("service",)),
    ),
    CommandTemplate(
        "enter_sleep",
        "Enter sleep",
        "Sleep for a while to save battery.",
        "power_management",
        _object({"duration_s": _int(1, 86400, "Sleep duration.")}, ("duration_s",)),
    ),
    CommandTemplate(
        "set_relay",
        "Set relay",
        "Switch a relay on or off.",
        "relay_control",
        _object({"relay": _RELAY, "on": {"type": "boolean"}}, ("relay", "on")),
    ),
    CommandTemplate(
        "toggle_relay",
        "Toggle relay",
        "Invert a relay's state.",
        "relay_control",
        _object({"relay": _RELAY}, ("relay",)),
    ),
    CommandTemplate(
        "pulse_relay",
        "Pulse relay",
        "Switch a relay on for a moment.",
        "relay_control",
        _object({"relay": _RELAY, "duration_ms": _int(10, 60000, "Pulse length.")}, ("relay",)),
        {"duration_ms": 500},
    ),
    CommandTemplate(
        "set_reporting_interval",
        "Set reporting interval",
        "How often the device publishes telemetry.",
        "configuration",
        _object({"interval_s": _int(1, 86400, "Seconds between readings.")}, ("interval_s",)),
    ),
    CommandTemplate(
        "set_sampling_rate",
        "Set sampling rate",
        "How often sensors are sampled.",
        "configuration",
        _object(
            {"rate_hz": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000}}, ("rate_hz",)
        ),
    ),
    CommandTemplate(
        "set_config",
        "Set configuration",
        "Write configuration keys.",
        "configuration",
        _object(
            {"values": {"type": "object", "minProperties": 1, "maxProperties": 64}}, ("values",)
        ),
    ),
    CommandTemplate(
        "set_timezone",
        "Set time zone",
        "IANA time zone for local schedules.",
        "configuration",
        _object(
            {"timezone": {"type": "string", "pattern": "^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$"}},
            ("timezone",),
        ),
    ),
    CommandTemplate(
        "set_schedule",
        "Set schedule",
        "Replace the device's local schedule.",
        "configuration",
        _object(
            {
                "entries": {
                    "type": "array",
                    "maxItems": 64,
                    "items": {
                        "type": "object",
                        "properties": {
                            "cron": {"type": "string", "maxLength": 64},
                            "command": {"type": "string", "maxLength": 64},
                            "parameters": {"type": "object"},
                        },
                        "required": ["cron", "command"],
                        "additionalProperties": False,
                    },
                }
            },
            ("entries",),
        ),
    ),
    CommandTemplate(
        "clear_schedule",
        "Clear schedule",
        "Remove every schedule entry.",
        "configuration",
        _object({}),
    ),
    CommandTemplate(
        "set_location",
        "Set location",
        "Fix the reported position of a device without GPS.",
        "configuration",
        _object(
            {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "altitude_m": {"type": "number"},
            },
            ("latitude", "longitude"),
        ),
    ),
    CommandTemplate(
        "set_apn",
        "Set APN",
        "Cellular access point name.",
        "configuration",
        _object({"apn": {"type": "string", "minLength": 1, "maxLength": 100}}, ("apn",)),
    ),
    CommandTemplate(
        "set_power_limit",
        "Set power limit",
        "Cut the load above this active power.",
        "metering",
        _object({"limit_w": {"type": "number", "minimum": 0, "maximum": 1e7}}, ("limit_w",)),
    ),
    CommandTemplate(
        "calibrate_sensor",
        "Calibrate sensor",
        "Apply offset and scale to one sensor.",
        "metering",
        _object(
            {
                "sensor": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                "offset": {"type": "number"},
                "scale": {"type": "number", "exclusiveMinimum": 0},
            },
            ("sensor",),
        ),
    ),
    CommandTemplate(
        "reset_energy_counters",
        "Reset energy counters",
        "Zero the import/export energy registers.",
        "metering",
        _object({"confirm": _CONFIRM}, ("confirm",)),
    ),
    CommandTemplate(
        "get_config",
        "Get configuration",
        "Report configuration keys (all when none given).",
        "diagnostics",
        _object({"keys": {"type": "array", "items": {"type": "string"}, "maxItems": 64}}),
    ),
    CommandTemplate(
        "set_log_level",
        "Set log level",
        "Device log verbosity.",
        "diagnostics",
        _object({"level": {"enum": ["error", "warn", "info", "debug", "trace"]}}, ("level",)),
    ),
    CommandTemplate(
        "upload_logs",
        "Upload logs",
        "Upload device logs to a pre-signed URL.",
        "diagnostics",
        _object({"upload_url": _URL, "since_ms": _int(0, 2**53, "Oldest entry.")}, ("upload_url",)),
        timeout_s=600,
    ),
    CommandTemplate(
        "run_self_test",
        "Run self-test",
        "Run the built-in hardware self-test and report.",
        "diagnostics",
        _object({}),
        timeout_s=300,
    ),
    CommandTemplate(
        "set_threshold",
        "Set local threshold",
        "Device-side alarm threshold for one field.",
        "alarm_control",
        _object(
            {
                "field": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                "low": {"type": "number"},
                "high": {"type": "number"},
            },
            ("field",),
        ),
    ),
    CommandTemplate(
        "clear_alarms",
        "Clear alarms",
        "Clear latched device alarms (one code, or all).",
        "alarm_control",
        _object({"code": {"type": "string", "maxLength": 128}}),
    ),
    CommandTemplate(
        "set_tamper_detection",
        "Set tamper detection",
        "Enable or disable the tamper switch.",
        "alarm_control",
        _object({"enabled": {"type": "boolean"}}, ("enabled",)),
    ),
    CommandTemplate(
        "set_buzzer",
        "Set buzzer",
        "Sound or silence the local buzzer.",
        "alarm_control",
        _object({"on": {"type": "boolean"}, "duration_s": _int(1, 600, "How long.")}, ("on",)),
    ),
    CommandTemplate(
        "firmware_update",
        "Firmware update",
        "Download, verify and install a firmware image.",
        "firmware_update",
        _object(
            {
                "url": _URL,
                "version": {"type": "string", "maxLength": 64},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
            ("url", "version", "sha256"),
        ),
        timeout_s=3600,
        max_retries=1,
    ),
    CommandTemplate(
        "set_lock",
        "Set lock",
        "Lock or unlock the enclosure door.",
        "security",
        _object({"locked": {"type": "boolean"}}, ("locked",)),
    ),
    CommandTemplate(
        "rotate_credentials",
        "Rotate credentials",
        "Make the device fetch new MQTT credentials.",
        "security",
        _object({}),
        max_retries=1,
    ),
    CommandTemplate(
        "factory_reset",
        "Factory reset",
        "Erase settings and data on the device.",
        "destructive",
        _object({"confirm": _CONFIRM}, ("confirm",)),
        max_retries=0,
    ),
    CommandTemplate(
        "decommission",
        "Decommission",
        "Stop reporting for good and wipe credentials.",
        "destructive",
        _object({"confirm": _CONFIRM}, ("confirm",)),
        max_retries=0,
    ),
)
