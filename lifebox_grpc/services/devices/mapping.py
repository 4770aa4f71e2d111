"""DeviceService: stored devices and their parts as protobuf messages, and enum maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from lifebox.v1 import devices_pb2
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store import devices as device_store
from lifebox_grpc.store import presence as presence_store  # presence (issue 13)

STATUS_TO_PB = {
    "provisioned": devices_pb2.DEVICE_STATUS_PROVISIONED,
    "active": devices_pb2.DEVICE_STATUS_ACTIVE,
    "disabled": devices_pb2.DEVICE_STATUS_DISABLED,
    "decommissioned": devices_pb2.DEVICE_STATUS_DECOMMISSIONED,
}

STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}
SOURCE_TO_PB = {
    "gps": devices_pb2.LOCATION_SOURCE_GPS,
    "network": devices_pb2.LOCATION_SOURCE_NETWORK,
    "manual": devices_pb2.LOCATION_SOURCE_MANUAL,
    "telemetry": devices_pb2.LOCATION_SOURCE_TELEMETRY,
}

SOURCE_FROM_PB = {v: k for k, v in SOURCE_TO_PB.items()}


def struct_of(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    out = struct_pb2.Struct()
    out.update(value)
    return out


def value_of(value: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(value, out)
    return out


def location_pb(location: device_store.Location) -> devices_pb2.DeviceLocation:
    out = devices_pb2.DeviceLocation(
        time=timestamp(location.time),
        latitude=location.latitude,
        longitude=location.longitude,
        source=SOURCE_TO_PB.get(location.source, devices_pb2.LOCATION_SOURCE_UNSPECIFIED),
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
        status=STATUS_TO_PB.get(device.status, devices_pb2.DEVICE_STATUS_UNSPECIFIED),
        expected_interval_seconds=device.expected_interval_s,
        last_seen_time=timestamp(device.last_seen_at),
        online=device.online,
        metadata=struct_of(device.metadata),
        latest_location=location_pb(device.latest_location) if device.latest_location else None,
        create_time=timestamp(device.created_at),
        update_time=timestamp(device.updated_at),
        decommission_time=timestamp(device.decommissioned_at),
        presence=presence_pb(device.presence) if device.presence else None,  # issue 13
    )


# --- presence (issue 13) ---
PRESENCE_STATE_TO_PB = {
    "online": devices_pb2.PRESENCE_STATE_ONLINE,
    "offline": devices_pb2.PRESENCE_STATE_OFFLINE,
    "stale": devices_pb2.PRESENCE_STATE_STALE,
}
PRESENCE_STATE_FROM_PB = {v: k for k, v in PRESENCE_STATE_TO_PB.items()}
PRESENCE_CAUSE_TO_PB = {
    "connect": devices_pb2.PRESENCE_CAUSE_CONNECT,
    "clean": devices_pb2.PRESENCE_CAUSE_CLEAN,
    "keepalive": devices_pb2.PRESENCE_CAUSE_KEEPALIVE,
    "kicked": devices_pb2.PRESENCE_CAUSE_KICKED,
    "revoked": devices_pb2.PRESENCE_CAUSE_REVOKED,
    "silent": devices_pb2.PRESENCE_CAUSE_SILENT,
    "reading": devices_pb2.PRESENCE_CAUSE_READING,
}


def presence_pb(presence: presence_store.Presence) -> devices_pb2.DevicePresence:
    return devices_pb2.DevicePresence(
        state=PRESENCE_STATE_TO_PB.get(presence.state, devices_pb2.PRESENCE_STATE_UNSPECIFIED),
        session=presence.session,
        cause=PRESENCE_CAUSE_TO_PB.get(presence.cause, devices_pb2.PRESENCE_CAUSE_UNSPECIFIED),
        last_connect_time=timestamp(presence.last_connect_at),
        last_disconnect_time=timestamp(presence.last_disconnect_at),
        update_time=timestamp(presence.updated_at),
    )


def connection_pb(change: presence_store.Connection) -> devices_pb2.DeviceConnectionEvent:
    return devices_pb2.DeviceConnectionEvent(
        id=change.id,
        device_id=str(change.device_id),
        client_id=str(change.client_id),
        time=timestamp(change.time),
        state=PRESENCE_STATE_TO_PB.get(change.state, devices_pb2.PRESENCE_STATE_UNSPECIFIED),
        session=change.session,
        cause=PRESENCE_CAUSE_TO_PB.get(change.cause, devices_pb2.PRESENCE_CAUSE_UNSPECIFIED),
        source=change.source,
    )
