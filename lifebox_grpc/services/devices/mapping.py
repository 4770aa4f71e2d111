"""DeviceService: stored devices and their parts as protobuf messages, and enum maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from lifebox.v1 import devices_pb2
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store import devices as device_store

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
    )
