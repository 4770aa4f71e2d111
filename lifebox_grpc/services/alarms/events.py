"""AlarmService: events (list, get, acknowledge, stream)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox.v1 import alarms_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition, NotFound
from lifebox_grpc.interceptors.stream_access import recheck_stream  # --- streams (issue 21)
from lifebox_grpc.services.alarms import reactions  # --- alarm-reactions (issue 15)
from lifebox_grpc.services.alarms.base import AlarmRpcs, tenant_of
from lifebox_grpc.services.alarms.fanout import Change
from lifebox_grpc.services.alarms.mapping import (
    STATUS_NAMES,
    acknowledgment_pb,
    change_pb,
    event_pb,
)
from lifebox_grpc.services.alarms.validation import SEVERITY_NAMES
from lifebox_grpc.services.common import page_size, parse_uuid, require_uuid, scoped
from lifebox_grpc.services.device_access import (
    ASSIGNED_ONLY_ROLES,  # --- streams (issue 21)
    device_filter,
    parse_device_ids,
    require_actions,
    require_devices,
    require_found,  # --- streams (issue 21)
)
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import alarm_events as event_store
from lifebox_grpc.store import alarm_reactions as reaction_store  # --- alarm-reactions (issue 15)

MAX_NOTE = 2000
# Streams re-read changes recorded this long before the last one seen: a change committed
# late with an earlier recorded_at is still sent (each once: ids seen are remembered).
STREAM_OVERLAP = timedelta(seconds=10)
# While the process's listener is down, streams read by time this often.
STREAM_POLL_S = 5.0
STREAM_MAX_BACK = timedelta(days=1)
STREAM_PAGE = 500


async def _require_event(
    conn: Any, principal: Principal, event_id: uuid.UUID, lock: bool = False
) -> event_store.Event:
    event = await event_store.get_event(conn, device_filter(principal), event_id, lock=lock)
    if event is None:
        raise NotFound("alarm event not found")
    return event


class EventRpcs(AlarmRpcs):
    """Events of the caller's visible devices."""

    async def ListAlarmEvents(
        self, request: alarms_pb2.ListAlarmEventsRequest, context: Any
    ) -> alarms_pb2.ListAlarmEventsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        device_id = parse_uuid(errors, "device_id", request.device_id, required=False)
        rule_id = parse_uuid(errors, "rule_id", request.rule_id, required=False)
        severities = []
        for i, s in enumerate(request.severities):
            if s not in SEVERITY_NAMES:
                errors.add(f"severities[{i}]", "unknown severity")
            else:
                severities.append(SEVERITY_NAMES[s])
        statuses = []
        for i, status in enumerate(request.statuses):
            if status not in STATUS_NAMES:
                errors.add(f"statuses[{i}]", "unknown status")
            else:
                statuses.append(STATUS_NAMES[status])
        start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
        if start and end and not start < end:
            errors.add("end_time", "must be after start_time")
        errors.raise_if_any()
        query = event_store.EventQuery(device_id, rule_id, severities, statuses, start, end)
        async with scoped(self.pool, principal) as conn:
            rows = await event_store.list_events(
                conn, device_filter(principal), query, after=after, limit=size + 1
            )
        page, token = time_id_page(rows, size, lambda row: row.raised_at)
        return alarms_pb2.ListAlarmEventsResponse(
            events=[event_pb(e) for e in page], next_page_token=token
        )

    async def GetAlarmEvent(
        self, request: alarms_pb2.GetAlarmEventRequest, context: Any
    ) -> alarms_pb2.GetAlarmEventResponse:
        principal = require_principal()
        event_id = require_uuid("event_id", request.event_id)
        async with scoped(self.pool, principal) as conn:
            event = await _require_event(conn, principal, event_id)
            acks = await event_store.acknowledgments(conn, event.id)
            changes = await event_store.changes(conn, event.id)
            outcomes = await reaction_store.outcomes(conn, event.id)  # --- alarm-reactions
        return alarms_pb2.GetAlarmEventResponse(
            event=event_pb(event),
            acknowledgments=[acknowledgment_pb(a) for a in acks],
            changes=[change_pb(c) for c in changes],
            reaction_outcomes=[reactions.outcome_pb(o) for o in outcomes],  # --- alarm-reactions
        )

    async def AcknowledgeAlarm(
        self, request: alarms_pb2.AcknowledgeAlarmRequest, context: Any
    ) -> alarms_pb2.AcknowledgeAlarmResponse:
        principal = require_principal()
        errors = ErrorCollector()
        event_id = parse_uuid(errors, "event_id", request.event_id)
        if len(request.note) > MAX_NOTE:
            errors.add("note", f"must be at most {MAX_NOTE} characters")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            event = await _require_event(conn, principal, event_id, lock=True)
            await require_actions(conn, principal, [event.device_id], DeviceAction.ACK_ALARMS)
            if event.status not in event_store.ACK_TO:
                raise FailedPrecondition(
                    "the event is already acknowledged", metadata={"status": event.status}
                )
            event = await event_store.acknowledge(
                conn, event, principal.user_id, request.note or None
            )
        return alarms_pb2.AcknowledgeAlarmResponse(event=event_pb(event))

    async def StreamAlarmEvents(
        self, request: alarms_pb2.StreamAlarmEventsRequest, context: Any
    ) -> AsyncIterator[alarms_pb2.StreamAlarmEventsResponse]:
        principal = require_principal()
        errors = ErrorCollector()
        devices = (
            parse_device_ids(errors, "device_ids", list(request.device_ids), most=1000)
            if request.device_ids
            else None
        )
        now = datetime.now(UTC)
        since = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else now
        if since < now - STREAM_MAX_BACK:
            errors.add("start_time", "at most a day back")
        errors.raise_if_any()
        if devices is not None:
            async with scoped(self.pool, principal) as conn:
                await require_devices(conn, principal, devices)
        # --- streams (issue 21) ---
        # Each re-authorization: named devices no longer visible end the stream (NOT_FOUND,
        # like StreamTelemetry); otherwise it follows the caller's devices as they are now.
        scope = device_filter(principal)

        def recheck(current: Principal) -> None:
            nonlocal scope
            if devices is not None and current.role in ASSIGNED_ONLY_ROLES:
                require_found(devices, frozenset(current.assigned_device_ids))
            scope = device_filter(current)

        recheck_stream(recheck)
        # --- end streams ---
        seen: dict[uuid.UUID, datetime] = {}
        cursor = since
        tenant = tenant_of(principal)

        def accepts(change: Change) -> bool:
            return tenant is None or change.client_id == tenant

        hub = self.fanout
        async with hub.subscribe(accepts) as sub:
            while True:
                # Everything recorded since the cursor (with overlap), then wait for the next
                # commit that touches this client (any number of notices: one read).
                while True:
                    async with scoped(self.pool, principal) as conn:
                        found = await event_store.changes_since(
                            conn, scope, devices, cursor - STREAM_OVERLAP, STREAM_PAGE
                        )
                        # --- alarm-reactions (issue 15): notify reactions, written with the change
                        fresh = [
                            (c, e) for c, e in found if c.id not in seen and c.recorded_at >= since
                        ]
                        notices = (
                            await reaction_store.notifications(conn, [c.event_id for c, _ in fresh])
                            if fresh
                            else []
                        )
                    for change, event in fresh:
                        seen[change.id] = change.recorded_at
                        phase = {"raised": "raise", "cleared": "clear"}.get(change.change)
                        yield alarms_pb2.StreamAlarmEventsResponse(
                            change=change_pb(change),
                            event=event_pb(event),
                            notifications=[
                                reactions.outcome_pb(n)
                                for n in notices
                                if n.event_id == change.event_id and n.phase == phase
                            ],
                        )
                        # --- end alarm-reactions ---
                    if found:
                        cursor = max(cursor, found[-1][0].recorded_at)
                    horizon = cursor - STREAM_OVERLAP
                    for key in [k for k, at in seen.items() if at < horizon]:
                        del seen[key]
                    if len(found) < STREAM_PAGE:
                        break
                await sub.wait(None if hub.listening else STREAM_POLL_S)
