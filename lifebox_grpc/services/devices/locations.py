"""DeviceService: where devices are and were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    scoped,
)
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.services.devices.mapping import (
    SOURCE_FROM_PB,
    location_pb,
)
from lifebox_grpc.services.devices.paging import parse_time
from lifebox_grpc.store import devices as device_store
from lifebox_grpc.store import locations as location_store

_FUTURE_SLACK = timedelta(minutes=5)


class LocationRpcs(DeviceRpcs):
    """Record and list locations."""

    async def RecordDeviceLocation(
        self, request: devices_pb2.RecordDeviceLocationRequest, context: Any
    ) -> devices_pb2.RecordDeviceLocationResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        loc = request.location
        if not request.HasField("location"):
            errors.add("location", "required")
        if not -90 <= loc.latitude <= 90:
            errors.add("location.latitude", "must be -90 to 90")
        if not -180 <= loc.longitude <= 180:
            errors.add("location.longitude", "must be -180 to 180")
        if loc.HasField("accuracy_m") and not loc.accuracy_m >= 0:
            errors.add("location.accuracy_m", "must not be negative")
        if loc.HasField("altitude_m") and not abs(loc.altitude_m) < 100_000:
            errors.add("location.altitude_m", "must be within 100 km of sea level")
        source = "manual"
        if loc.source != devices_pb2.LOCATION_SOURCE_UNSPECIFIED:
            source = SOURCE_FROM_PB.get(loc.source, "")
            if not source:
                errors.add("location.source", "unknown source")
        when = loc.time.ToDatetime(UTC) if loc.HasField("time") else datetime.now(UTC)
        if when > datetime.now(UTC).replace(microsecond=0) + _FUTURE_SLACK:
            errors.add("location.time", "must not be in the future")
        errors.raise_if_any()
        new = device_store.Location(
            when,
            loc.latitude,
            loc.longitude,
            loc.altitude_m if loc.HasField("altitude_m") else None,
            loc.accuracy_m if loc.HasField("accuracy_m") else None,
            source,
        )
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id, DeviceAction.RECORD_LOCATION)
            recorded = await location_store.record_location(conn, device_id, device.client_id, new)
        return devices_pb2.RecordDeviceLocationResponse(location=location_pb(recorded))

    async def ListDeviceLocations(
        self, request: devices_pb2.ListDeviceLocationsRequest, context: Any
    ) -> devices_pb2.ListDeviceLocationsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            errors.add("end_time", "must be after start_time")
        key = decode_page_token(errors, request.page_token, 1)
        before = parse_time(errors, key[0]) if key else None
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await location_store.list_locations(
                conn, device_id, start=start, end=end, before=before, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceLocationsResponse(
            locations=[location_pb(r) for r in page],
            next_page_token=encode_page_token([page[-1].time.isoformat()]) if more else "",
        )
