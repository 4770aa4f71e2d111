"""DeviceService: the device registry, metadata history and snapshots, locations,
assignments and hardware alarms, one module per resource. Validation and mapping only; the
SQL is in the stores; access to a device is checked by :mod:`..device_access`."""

from __future__ import annotations

from lifebox_grpc.services.devices.alarms import AlarmRpcs
from lifebox_grpc.services.devices.assignments import AssignmentRpcs
from lifebox_grpc.services.devices.credentials import CredentialRpcs  # credentials (issue 13)
from lifebox_grpc.services.devices.history import HistoryRpcs
from lifebox_grpc.services.devices.locations import LocationRpcs
from lifebox_grpc.services.devices.mapping import device_pb, location_pb
from lifebox_grpc.services.devices.presence import PresenceRpcs  # presence (issue 13)
from lifebox_grpc.services.devices.registry import RegistryRpcs

__all__ = ["DeviceServicer", "device_pb", "location_pb"]


class DeviceServicer(
    RegistryRpcs,
    HistoryRpcs,
    LocationRpcs,
    AssignmentRpcs,
    AlarmRpcs,
    CredentialRpcs,  # credentials (issue 13)
    PresenceRpcs,  # presence (issue 13)
):
    """The DeviceService handlers."""
