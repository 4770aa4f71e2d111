"""AlarmService access: the two-tenant matrix and the role matrix over every method.

Client A's administrator naming anything of client B gets NOT_FOUND and no data; a viewer
of A (assigned VIEW to A's device) reads rules and events but changes and acknowledges
nothing (PERMISSION_DENIED), and an operator creates no rules.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from lifebox.v1 import alarms_pb2 as A
from lifebox.v1 import alarms_pb2_grpc, devices_pb2_grpc
from lifebox.v1 import devices_pb2 as D
from lifebox_grpc.services.registry import method_names
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarms import make_event, make_rule
from tests.helpers.grpc import Server, Tenant, make_tenant

pytestmark = pytest.mark.timeout(120)
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
_SERVICE = "/lifebox.v1.AlarmService/"


@dataclass
class World:
    tenant: Tenant
    device: uuid.UUID
    rule: uuid.UUID
    event: uuid.UUID


async def make_world(server: Server, conn: asyncpg.Connection) -> World:
    tenant = await make_tenant(server, conn)
    device, _ = await factories.make_device(conn, tenant.client_id)
    await factories.make_reading(conn, tenant.client_id, device, temperature_c=41.0)
    rule = await make_rule(conn, tenant.client_id, device_id=device)
    event = await make_event(conn, tenant.client_id, rule, device, datetime.now(UTC))
    await devices_pb2_grpc.DeviceServiceStub(server.channel).AssignDevice(
        D.AssignDeviceRequest(
            device_id=str(device),
            user_id=str(tenant.users["viewer"].user_id),
            access_level=D.ACCESS_LEVEL_VIEW,
        ),
        metadata=tenant.users["client"].md,
    )
    return World(tenant, device, rule, event)


def _rule(device: uuid.UUID | None = None) -> A.AlarmRule:
    return A.AlarmRule(
        name="hot", kind=A.ALARM_RULE_KIND_THRESHOLD, field="temperature_c",
        condition=A.ALARM_CONDITION_GT, threshold=30, severity=A.ALARM_SEVERITY_MAJOR,
        device_id=str(device) if device else "",
    )  # fmt: skip


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    try:
        return OK, await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), None


async def _first_of_stream(stream: Any) -> tuple[grpc.StatusCode, Any]:
    """The first message, or the stream's error; (OK, None) when nothing comes in 2 s."""
    try:
        return OK, await asyncio.wait_for(stream.read(), 2)
    except TimeoutError:
        return OK, None
    except grpc.aio.AioRpcError as exc:
        return exc.code(), None
    finally:
        stream.cancel()


# Each method called by `md` on `target`'s resources: (status, reply).
Case = Callable[
    [alarms_pb2_grpc.AlarmServiceStub, Any, World], Awaitable[tuple[grpc.StatusCode, Any]]
]
CASES: dict[str, Case] = {
    "CreateAlarmRule": lambda s, md, w: code_of(
        s.CreateAlarmRule(A.CreateAlarmRuleRequest(rule=_rule(w.device)), metadata=md)
    ),
    "GetAlarmRule": lambda s, md, w: code_of(
        s.GetAlarmRule(A.GetAlarmRuleRequest(rule_id=str(w.rule)), metadata=md)
    ),
    "ListAlarmRules": lambda s, md, w: code_of(
        s.ListAlarmRules(A.ListAlarmRulesRequest(device_id=str(w.device)), metadata=md)
    ),
    "UpdateAlarmRule": lambda s, md, w: code_of(
        s.UpdateAlarmRule(
            A.UpdateAlarmRuleRequest(
                rule=A.AlarmRule(id=str(w.rule), name="renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=md,
        )
    ),
    "DeleteAlarmRule": lambda s, md, w: code_of(
        s.DeleteAlarmRule(A.DeleteAlarmRuleRequest(rule_id=str(w.rule)), metadata=md)
    ),
    "SetAlarmRuleEnabled": lambda s, md, w: code_of(
        s.SetAlarmRuleEnabled(A.SetAlarmRuleEnabledRequest(rule_id=str(w.rule)), metadata=md)
    ),
    "ListAlarmEvents": lambda s, md, w: code_of(
        s.ListAlarmEvents(A.ListAlarmEventsRequest(device_id=str(w.device)), metadata=md)
    ),
    "GetAlarmEvent": lambda s, md, w: code_of(
        s.GetAlarmEvent(A.GetAlarmEventRequest(event_id=str(w.event)), metadata=md)
    ),
    "AcknowledgeAlarm": lambda s, md, w: code_of(
        s.AcknowledgeAlarm(A.AcknowledgeAlarmRequest(event_id=str(w.event)), metadata=md)
    ),
    "StreamAlarmEvents": lambda s, md, w: _first_of_stream(
        s.StreamAlarmEvents(
            A.StreamAlarmEventsRequest(
                start_time=_ts(datetime.now(UTC) - timedelta(minutes=5)),
                device_ids=[str(w.device)],
            ),
            metadata=md,
        )
    ),
    "TestAlarmRule": lambda s, md, w: code_of(
        s.TestAlarmRule(
            A.TestAlarmRuleRequest(
                rule=_rule(), device_id=str(w.device),
                start_time=_ts(datetime.now(UTC) - timedelta(hours=1)),
            ),
            metadata=md,
        )
    ),
}  # fmt: skip

# What a viewer assigned VIEW to the device gets on its own tenant's resources.
VIEWER = {
    "CreateAlarmRule": DENIED,
    "GetAlarmRule": OK,
    "ListAlarmRules": OK,
    "UpdateAlarmRule": DENIED,
    "DeleteAlarmRule": DENIED,
    "SetAlarmRuleEnabled": DENIED,
    "ListAlarmEvents": OK,
    "GetAlarmEvent": OK,
    "AcknowledgeAlarm": DENIED,
    "StreamAlarmEvents": OK,
    "TestAlarmRule": OK,
}


def test_the_matrices_cover_every_method_of_the_service() -> None:
    ours = {m.removeprefix(_SERVICE) for m in method_names() if m.startswith(_SERVICE)}
    assert ours == set(CASES)
    assert ours == set(VIEWER)


@pytest.mark.parametrize("method", sorted(CASES))
async def test_client_a_naming_client_b_gets_not_found_and_no_data(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    a = await make_world(grpc_server, owner_conn)
    b = await make_world(grpc_server, owner_conn)
    s = alarms_pb2_grpc.AlarmServiceStub(grpc_server.channel)
    code, reply = await CASES[method](s, a.tenant.users["client"].md, b)
    if method == "ListAlarmEvents":  # names a device only as a filter: none of B's events
        assert code == OK
        assert list(reply.events) == []
    else:
        assert code == NOT_FOUND, method
    # Unfiltered reads show nothing of B either.
    rules = await s.ListAlarmRules(A.ListAlarmRulesRequest(), metadata=a.tenant.users["client"].md)
    events = await s.ListAlarmEvents(
        A.ListAlarmEventsRequest(), metadata=a.tenant.users["client"].md
    )
    assert str(b.rule) not in str(rules)
    assert str(b.event) not in str(events)
    # B is untouched.
    async with tenant_transaction(owner_conn, b.tenant.client_id):
        status = await owner_conn.fetchval("SELECT status FROM alarm_events WHERE id = $1", b.event)
        name = await owner_conn.fetchval("SELECT name FROM alarm_rules WHERE id = $1", b.rule)
    assert status == "active_unack"
    assert name is not None
    assert name != "renamed"


@pytest.mark.parametrize("method", sorted(CASES))
async def test_a_viewer_reads_alarms_of_its_device_but_changes_nothing(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    w = await make_world(grpc_server, owner_conn)
    s = alarms_pb2_grpc.AlarmServiceStub(grpc_server.channel)
    code, _ = await CASES[method](s, w.tenant.users["viewer"].md, w)
    assert code == VIEWER[method], method


async def test_an_operator_creates_no_rules(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    w = await make_world(grpc_server, owner_conn)
    s = alarms_pb2_grpc.AlarmServiceStub(grpc_server.channel)
    code, _ = await CASES["CreateAlarmRule"](s, w.tenant.users["operator"].md, w)
    assert code == DENIED
