"""AlarmService over a real server: rules validated by the native checker, events seen
through their devices, acknowledged by who may, streamed, and rules tried on stored data."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from lifebox.v1 import alarms_pb2 as A
from lifebox.v1 import alarms_pb2_grpc, devices_pb2_grpc
from lifebox.v1 import devices_pb2 as D
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarms import make_event, make_rule
from tests.helpers.grpc import Server, Tenant, make_tenant, violations

pytestmark = pytest.mark.timeout(120)


def api(server: Server) -> alarms_pb2_grpc.AlarmServiceStub:
    return alarms_pb2_grpc.AlarmServiceStub(server.channel)


def threshold_rule(**values: Any) -> A.AlarmRule:
    base: dict[str, Any] = {
        "name": "hot",
        "kind": A.ALARM_RULE_KIND_THRESHOLD,
        "field": "temperature_c",
        "condition": A.ALARM_CONDITION_GT,
        "threshold": 30.0,
        "hysteresis": 2.0,
        "severity": A.ALARM_SEVERITY_MAJOR,
    }
    return A.AlarmRule(**{**base, **values})


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def refused(call: Any) -> tuple[grpc.StatusCode, dict[str, str]]:
    """The status code of a failed call and its field violations (field -> description)."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code(), violations(exc.value)


async def test_rules_are_created_read_listed_updated_enabled_and_deleted(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"].md
    device, _ = await factories.make_device(owner_conn, tenant.client_id, device_type="meter")
    s = api(grpc_server)
    created = (
        await s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(rule=threshold_rule(device_type="meter")), metadata=admin
        )
    ).rule
    assert created.scope == A.ALARM_RULE_SCOPE_DEVICE_TYPE
    assert created.enabled
    assert created.created_by == str(tenant.users["client"].user_id)
    got = (await s.GetAlarmRule(A.GetAlarmRuleRequest(rule_id=created.id), metadata=admin)).rule
    assert got == created
    listed = await s.ListAlarmRules(A.ListAlarmRulesRequest(device_id=str(device)), metadata=admin)
    assert [r.id for r in listed.rules] == [created.id]
    changed = (
        await s.UpdateAlarmRule(
            A.UpdateAlarmRuleRequest(
                rule=A.AlarmRule(id=created.id, device_id=str(device), threshold=35.0),
                update_mask=field_mask_pb2.FieldMask(paths=["device_id", "threshold"]),
            ),
            metadata=admin,
        )
    ).rule
    assert changed.scope == A.ALARM_RULE_SCOPE_DEVICE
    assert changed.device_type == ""
    assert changed.threshold == 35.0
    off = await s.SetAlarmRuleEnabled(
        A.SetAlarmRuleEnabledRequest(rule_id=created.id, enabled=False), metadata=admin
    )
    assert not off.rule.enabled
    await s.DeleteAlarmRule(A.DeleteAlarmRuleRequest(rule_id=created.id), metadata=admin)
    code, _ = await refused(
        s.GetAlarmRule(A.GetAlarmRuleRequest(rule_id=created.id), metadata=admin)
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_rule_that_cannot_be_checked_is_invalid_argument_naming_the_position(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    s = api(grpc_server)
    bad = A.AlarmRule(
        name="expr",
        kind=A.ALARM_RULE_KIND_EXPRESSION,
        severity=A.ALARM_SEVERITY_MINOR,
        expression="temperature_c > 1 && size(status) > 2",
        clear_expression="[1].exists(x, x > 0)",
    )
    code, details = await refused(
        s.CreateAlarmRule(A.CreateAlarmRuleRequest(rule=bad), metadata=tenant.users["client"].md)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "characters 21-26" in details["rule.expression"]
    assert "function_not_allowed" in details["rule.expression"]
    assert "comprehension" in details["rule.clear_expression"]
    # Unknown fields, a missing threshold band, an unknown kind: every problem at once.
    code, details = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(
                rule=A.AlarmRule(
                    name="r", kind=A.ALARM_RULE_KIND_RANGE, field="nope",
                    condition=A.ALARM_CONDITION_OUTSIDE, low=20, high=10,
                    severity=A.ALARM_SEVERITY_INFO,
                )
            ),
            metadata=tenant.users["client"].md,
        )
    )  # fmt: skip
    assert {"rule.field", "rule.high"} <= set(details)
    code, details = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(rule=A.AlarmRule(name="x", severity=A.ALARM_SEVERITY_INFO)),
            metadata=tenant.users["client"].md,
        )
    )
    assert set(details) == {"rule.kind"}
    # Every kind validates: a no-data rule needs its silence.
    code, details = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(
                rule=A.AlarmRule(
                    name="quiet", kind=A.ALARM_RULE_KIND_NO_DATA, severity=A.ALARM_SEVERITY_INFO
                )
            ),
            metadata=tenant.users["client"].md,
        )
    )
    assert set(details) == {"rule.duration_seconds"}
    # --- alarms-eval (issue 15): RATE and DEVICE_ALARM are evaluated, so they are saved;
    # a rate without its window is not ---
    rate = A.AlarmRule(
        name="rising", kind=A.ALARM_RULE_KIND_RATE, field="temperature_c",
        condition=A.ALARM_CONDITION_GT, threshold=0.5, window_seconds=60,
        severity=A.ALARM_SEVERITY_INFO,
    )  # fmt: skip
    hardware = A.AlarmRule(
        name="hw", kind=A.ALARM_RULE_KIND_DEVICE_ALARM,
        device_alarm_severity=A.ALARM_SEVERITY_CRITICAL, severity=A.ALARM_SEVERITY_MAJOR,
    )  # fmt: skip
    for rule in (rate, hardware):
        made = await s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(rule=rule), metadata=tenant.users["client"].md
        )
        assert made.rule.kind == rule.kind
    rate.window_seconds = 0
    code, details = await refused(
        s.CreateAlarmRule(A.CreateAlarmRuleRequest(rule=rate), metadata=tenant.users["client"].md)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(details) == {"rule.window_seconds"}
    # --- end alarms-eval ---


async def _assign(
    server: Server, tenant: Tenant, device: uuid.UUID, role: str, level: D.AccessLevel.ValueType
) -> None:
    await devices_pb2_grpc.DeviceServiceStub(server.channel).AssignDevice(
        D.AssignDeviceRequest(
            device_id=str(device), user_id=str(tenant.users[role].user_id), access_level=level
        ),
        metadata=tenant.users["client"].md,
    )


async def test_an_event_is_acknowledged_once_with_a_note_by_who_may_act_on_its_device(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    rule = await make_rule(owner_conn, tenant.client_id, device_id=device)
    event = str(await make_event(owner_conn, tenant.client_id, rule, device, datetime.now(UTC)))
    s = api(grpc_server)
    ack = A.AcknowledgeAlarmRequest(event_id=event, note="on it")
    operator, viewer = tenant.users["operator"], tenant.users["viewer"]
    # Not assigned: the event's device is not theirs to see.
    assert (await refused(s.AcknowledgeAlarm(ack, metadata=operator.md)))[
        0
    ] == grpc.StatusCode.NOT_FOUND
    await _assign(grpc_server, tenant, device, "operator", D.ACCESS_LEVEL_VIEW)
    await _assign(grpc_server, tenant, device, "viewer", D.ACCESS_LEVEL_MANAGE)
    # VIEW does not acknowledge; a viewer's role holds no alarms.ack whatever the level.
    assert (await refused(s.AcknowledgeAlarm(ack, metadata=operator.md)))[
        0
    ] == grpc.StatusCode.PERMISSION_DENIED
    assert (await refused(s.AcknowledgeAlarm(ack, metadata=viewer.md)))[
        0
    ] == grpc.StatusCode.PERMISSION_DENIED
    await _assign(grpc_server, tenant, device, "operator", D.ACCESS_LEVEL_OPERATE)
    done = (await s.AcknowledgeAlarm(ack, metadata=operator.md)).event
    assert done.status == A.ALARM_EVENT_STATUS_ACTIVE_ACK
    code, _ = await refused(s.AcknowledgeAlarm(ack, metadata=operator.md))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    got = await s.GetAlarmEvent(A.GetAlarmEventRequest(event_id=event), metadata=viewer.md)
    assert [(a.user_id, a.note) for a in got.acknowledgments] == [(str(operator.user_id), "on it")]
    assert [c.kind for c in got.changes] == [
        A.ALARM_EVENT_CHANGE_KIND_RAISED,
        A.ALARM_EVENT_CHANGE_KIND_ACKNOWLEDGED,
    ]
    listed = await s.ListAlarmEvents(
        A.ListAlarmEventsRequest(statuses=[A.ALARM_EVENT_STATUS_ACTIVE_ACK]), metadata=viewer.md
    )
    assert [e.id for e in listed.events] == [event]


async def test_the_stream_sends_changes_from_a_time_then_live(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    rule = await make_rule(owner_conn, tenant.client_id, device_id=device)
    started = datetime.now(UTC) - timedelta(seconds=1)
    first = str(await make_event(owner_conn, tenant.client_id, rule, device, started))
    s = api(grpc_server)
    admin = tenant.users["client"].md
    stream = s.StreamAlarmEvents(A.StreamAlarmEventsRequest(start_time=ts(started)), metadata=admin)
    got = await asyncio.wait_for(stream.read(), 10)
    assert got.event.id == first
    assert got.change.kind == A.ALARM_EVENT_CHANGE_KIND_RAISED
    await s.AcknowledgeAlarm(A.AcknowledgeAlarmRequest(event_id=first), metadata=admin)
    got = await asyncio.wait_for(stream.read(), 10)
    assert (got.event.id, got.change.kind) == (first, A.ALARM_EVENT_CHANGE_KIND_ACKNOWLEDGED)
    assert got.event.status == A.ALARM_EVENT_STATUS_ACTIVE_ACK
    stream.cancel()


async def test_a_dry_run_replays_stored_readings_and_says_what_the_rule_would_raise(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    for i, value in enumerate([25, 31, 29.5, 27, 33]):
        await factories.make_reading(
            owner_conn, tenant.client_id, device, base + timedelta(seconds=i), temperature_c=value
        )
    reply = await api(grpc_server).TestAlarmRule(
        A.TestAlarmRuleRequest(
            rule=threshold_rule(message_template="{value} on {device}"),
            device_id=str(device),
            start_time=ts(base),
        ),
        metadata=tenant.users["client"].md,
    )
    assert reply.readings_evaluated == 5
    assert [
        (
            e.raise_time.ToDatetime(UTC),
            e.clear_time.ToDatetime(UTC) if e.HasField("clear_time") else None,
        )
        for e in reply.events
    ] == [
        (base + timedelta(seconds=1), base + timedelta(seconds=3)),
        (base + timedelta(seconds=4), None),
    ]
    assert reply.events[0].trigger_value == 31
    assert reply.events[0].clear_value == 27
    assert reply.events[0].message.startswith("31.0 on ")
    # Nothing was stored.
    async with tenant_transaction(owner_conn, tenant.client_id):
        stored = await owner_conn.fetchval(
            "SELECT count(*) FROM alarm_events WHERE device_id = $1", device
        )
        readings = await owner_conn.fetchval(
            "SELECT count(*) FROM telemetry_events WHERE device_id = $1", device
        )
    assert (stored, readings) == (0, 5)
