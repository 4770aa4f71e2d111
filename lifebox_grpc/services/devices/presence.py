"""DeviceService: a device's connection history and the live stream of presence changes."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.interceptors.stream_access import recheck_stream
from lifebox_grpc.presence.hub import PresenceHub
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    require_uuid,
    scoped,
)
from lifebox_grpc.services.device_access import (
    ASSIGNED_ONLY_ROLES,
    device_filter,
    parse_device_ids,
    require_device,
    require_devices,
    require_found,
)
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.services.devices.mapping import connection_pb
from lifebox_grpc.store import presence as presence_store

MAX_STREAM_DEVICES = 1000
# While the hub is not listening, streams read by time this often.
POLL_SECONDS = 5.0
# A resync reads changes recorded this long before the newest sent (a change's time is when
# it was observed, which can precede its commit), skipping ids already sent.
RESYNC_MARGIN = timedelta(minutes=2)
REMEMBERED_IDS = 100_000
RESYNC_ROWS = 1000


class _Audience:
    """Whose changes a stream sends: the caller's visible devices now (re-read from the
    principal at each re-authorization), narrowed to the devices asked for."""

    def __init__(self, principal: Principal, wanted: frozenset[uuid.UUID] | None) -> None:
        self.scope = device_filter(principal)
        self.wanted = wanted

    def update(self, principal: Principal) -> None:
        if self.wanted is not None and principal.role in ASSIGNED_ONLY_ROLES:
            # Like StreamTelemetry: a named device no longer visible ends the stream.
            require_found(list(self.wanted), frozenset(principal.assigned_device_ids))
        self.scope = device_filter(principal)

    def sees(self, device_id: uuid.UUID, client_id: uuid.UUID) -> bool:
        scope = self.scope
        return (
            (scope.client_id is None or scope.client_id == client_id)
            and (scope.device_ids is None or device_id in scope.device_ids)
            and (self.wanted is None or device_id in self.wanted)
        )


class PresenceRpcs(DeviceRpcs):
    """ListDeviceConnections and StreamDeviceEvents."""

    _presence_hub: PresenceHub | None = None

    @property
    def presence_hub(self) -> PresenceHub:
        """One LISTEN hub per servicer, i.e. per server process, shared by every stream."""
        if self._presence_hub is None:
            self._presence_hub = PresenceHub(resolve_endpoints(self.settings).app_dsn)
        return self._presence_hub

    async def ListDeviceConnections(
        self, request: devices_pb2.ListDeviceConnectionsRequest, context: Any
    ) -> devices_pb2.ListDeviceConnectionsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = require_uuid("device_id", request.device_id)
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        before_id = None
        if key:
            try:
                before_id = int(key[0])
            except ValueError:
                errors.add("page_token", "not a token of this list")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await presence_store.list_connections(
                conn, device_id, before_id=before_id, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        return devices_pb2.ListDeviceConnectionsResponse(
            events=[connection_pb(r) for r in page],
            next_page_token=encode_page_token([str(page[-1].id)]) if more else "",
        )

    async def StreamDeviceEvents(
        self, request: devices_pb2.StreamDeviceEventsRequest, context: Any
    ) -> AsyncIterator[devices_pb2.StreamDeviceEventsResponse]:
        """Each committed presence change from the call's start, once, for as long as the
        caller may see its device. After the hub's listener was lost, changes are found by
        time (recorded since the call's start, and at most two minutes before the newest
        sent)."""
        principal = require_principal()
        wanted: frozenset[uuid.UUID] | None = None
        if request.device_ids:
            errors = ErrorCollector()
            ids = parse_device_ids(
                errors, "device_ids", request.device_ids, most=MAX_STREAM_DEVICES
            )
            errors.raise_if_any()
            async with scoped(self.pool, principal) as conn:
                await require_devices(conn, principal, ids)
            wanted = frozenset(ids)
        audience = _Audience(principal, wanted)
        recheck_stream(audience.update)
        sent: OrderedDict[int, None] = OrderedDict()
        hub = self.presence_hub
        async with hub.subscribe(lambda n: audience.sees(n.device_id, n.client_id)) as subscription:
            async with scoped(self.pool, principal) as conn:
                start: datetime = await conn.fetchval("SELECT now()")
            since = start
            # A first message without an event: the stream is live, every change committed
            # from here on will be sent.
            yield devices_pb2.StreamDeviceEventsResponse()
            while True:
                update = await subscription.wait(None if hub.listening else POLL_SECONDS)
                seen = [n.id for n in update.notices]
                changes: list[presence_store.Connection] = []
                if seen:
                    async with scoped(self.pool, principal) as conn:
                        changes = await presence_store.connections_by_id(conn, seen)
                if update.resync:
                    if not hub.listening:
                        await hub.ensure_listening()
                    async with scoped(self.pool, principal) as conn:
                        changes += await presence_store.connections_since(
                            conn, max(start, since - RESYNC_MARGIN), RESYNC_ROWS
                        )
                for change in _new(changes, sent, audience):
                    since = max(since, change.time)
                    yield devices_pb2.StreamDeviceEventsResponse(event=connection_pb(change))


def _new(
    changes: Iterable[presence_store.Connection],
    sent: OrderedDict[int, None],
    audience: _Audience,
) -> list[presence_store.Connection]:
    """The changes not sent yet that the audience may see, in id order; remembered as sent
    (the oldest ids forgotten past :data:`REMEMBERED_IDS`)."""
    out = []
    for change in sorted(changes, key=lambda c: c.id):
        if change.id in sent or not audience.sees(change.device_id, change.client_id):
            continue
        sent[change.id] = None
        out.append(change)
    while len(sent) > REMEMBERED_IDS:
        sent.popitem(last=False)
    return out
