"""AlarmService reactions over a real server: saved with their rule, the webhook secret shown
once, every bad reaction a field violation, command reactions authorised when saved, outcomes
in GetAlarmEvent, notify reactions on StreamAlarmEvents, and nothing across tenants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from lifebox.v1 import alarms_pb2 as A
from lifebox.v1 import alarms_pb2_grpc
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarm_reactions import clear_event
from tests.helpers.alarms import make_event
from tests.helpers.grpc import Server, make_account, make_tenant, sign_in, violations

pytestmark = pytest.mark.timeout(120)

RAISE = A.ALARM_REACTION_TIMING_ON_RAISE


def api(server: Server) -> alarms_pb2_grpc.AlarmServiceStub:
    return alarms_pb2_grpc.AlarmServiceStub(server.channel)


def rule(device_id: str, reactions: list[A.AlarmReaction], **values: Any) -> A.AlarmRule:
    base: dict[str, Any] = {
        "name": "hot", "device_id": device_id, "kind": A.ALARM_RULE_KIND_THRESHOLD,
        "field": "temperature_c", "condition": A.ALARM_CONDITION_GT, "threshold": 30.0,
        "severity": A.ALARM_SEVERITY_MAJOR, "reactions": reactions,
    }  # fmt: skip
    return A.AlarmRule(**{**base, **values})


def webhook(url: str = "https://hooks.example.invalid/lifebox", **values: Any) -> A.AlarmReaction:
    return A.AlarmReaction(
        kind=A.ALARM_REACTION_KIND_WEBHOOK, timing=RAISE, webhook_url=url, **values
    )


def command(code: str = "reboot", **params: Any) -> A.AlarmReaction:
    out = A.AlarmReaction(
        kind=A.ALARM_REACTION_KIND_COMMAND, timing=RAISE, command_template_code=code
    )
    if params:
        struct = struct_pb2.Struct()
        struct.update(params)
        out.parameters.CopyFrom(struct)
    return out


async def refused(call: Any) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code(), violations(exc.value)


async def test_reactions_are_saved_with_their_rule_and_the_secret_is_shown_once(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    md = tenant.users["client"].md
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    s = api(grpc_server)
    email = A.AlarmReaction(
        kind=A.ALARM_REACTION_KIND_EMAIL,
        timing=A.ALARM_REACTION_TIMING_ON_RAISE_AND_CLEAR,
        email_to=["ops@example.com"],
    )
    notify = A.AlarmReaction(
        kind=A.ALARM_REACTION_KIND_NOTIFY, timing=A.ALARM_REACTION_TIMING_ON_CLEAR
    )
    created = await s.CreateAlarmRule(
        A.CreateAlarmRuleRequest(
            rule=rule(str(device), [command(delay_s=3), webhook(), email, notify])
        ),
        metadata=md,
    )
    assert len(created.webhook_secret) == 64
    got = (await s.GetAlarmRule(A.GetAlarmRuleRequest(rule_id=created.rule.id), metadata=md)).rule
    assert got == created.rule
    kinds = [(r.kind, r.timing) for r in got.reactions]
    assert kinds == [
        (A.ALARM_REACTION_KIND_COMMAND, RAISE),
        (A.ALARM_REACTION_KIND_WEBHOOK, RAISE),
        (A.ALARM_REACTION_KIND_EMAIL, A.ALARM_REACTION_TIMING_ON_RAISE_AND_CLEAR),
        (A.ALARM_REACTION_KIND_NOTIFY, A.ALARM_REACTION_TIMING_ON_CLEAR),
    ]
    assert got.reactions[0].command_template_code == "reboot"
    assert dict(got.reactions[0].parameters) == {"delay_s": 3}
    assert created.webhook_secret not in str(got)
    listed = await s.ListAlarmRules(A.ListAlarmRulesRequest(), metadata=md)
    assert [len(r.reactions) for r in listed.rules] == [4]
    # An update keeps the reaction named by id and drops the others; the webhook's secret
    # is not shown again.
    keep = got.reactions[1]
    keep.webhook_url = "https://hooks.example.invalid/other"
    updated = await s.UpdateAlarmRule(
        A.UpdateAlarmRuleRequest(
            rule=A.AlarmRule(id=got.id, reactions=[keep]),
            update_mask=field_mask_pb2.FieldMask(paths=["reactions"]),
        ),
        metadata=md,
    )
    assert updated.webhook_secret == ""
    assert [(r.id, r.webhook_url) for r in updated.rule.reactions] == [
        (keep.id, "https://hooks.example.invalid/other")
    ]
    # A rule's first webhook, added by an update, gets a secret then.
    plain = await s.CreateAlarmRule(
        A.CreateAlarmRuleRequest(rule=rule(str(device), [], name="plain")), metadata=md
    )
    assert plain.webhook_secret == ""
    added = await s.UpdateAlarmRule(
        A.UpdateAlarmRuleRequest(
            rule=A.AlarmRule(id=plain.rule.id, reactions=[webhook()]),
            update_mask=field_mask_pb2.FieldMask(paths=["reactions"]),
        ),
        metadata=md,
    )
    assert len(added.webhook_secret) == 64
    assert added.webhook_secret != created.webhook_secret


async def test_every_bad_reaction_is_a_field_violation(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    md = tenant.users["client"].md
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    s = api(grpc_server)
    bad = [
        A.AlarmReaction(kind=A.ALARM_REACTION_KIND_NOTIFY),
        A.AlarmReaction(timing=RAISE),
        webhook("ftp://example.com/x"),
        A.AlarmReaction(kind=A.ALARM_REACTION_KIND_EMAIL, timing=RAISE, email_to=["nobody"]),
        A.AlarmReaction(
            kind=A.ALARM_REACTION_KIND_NOTIFY, timing=RAISE, webhook_url="https://x.io"
        ),
        A.AlarmReaction(kind=A.ALARM_REACTION_KIND_COMMAND, timing=RAISE),
        webhook(id="not-a-uuid"),
    ]
    code, found = await refused(
        s.CreateAlarmRule(A.CreateAlarmRuleRequest(rule=rule(str(device), bad)), metadata=md)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(found) == {
        "rule.reactions[0].timing",
        "rule.reactions[1].kind",
        "rule.reactions[2].webhook_url",
        "rule.reactions[3].email_to[0]",
        "rule.reactions[4].webhook_url",
        "rule.reactions[5].command_template_code",
        "rule.reactions[6].id",
    }
    code, found = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(
                rule=rule(str(device), [command("no-such-template"), command(delay_s="soon")])
            ),
            metadata=md,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(found) == {
        "rule.reactions[0].command_template_code",
        "rule.reactions[1].parameters.delay_s",
    }
    code, found = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(rule=rule(str(device), [webhook()] * 11)), metadata=md
        )
    )
    assert "rule.reactions" in found
    # Nothing was saved by the refused calls.
    listed = await s.ListAlarmRules(A.ListAlarmRulesRequest(), metadata=md)
    assert list(listed.rules) == []


async def test_a_command_reaction_is_authorised_for_the_caller_and_the_owner_when_saved(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    md = tenant.users["client"].md
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    s = api(grpc_server)
    # A command permission limited to a role the caller does not have.
    async with tenant_transaction(owner_conn, None, staff=True):
        permission = await owner_conn.fetchval(
            "SELECT command_permission FROM command_templates WHERE code = 'reboot' "
            "AND client_id IS NULL"
        )
        before = await owner_conn.fetchval(
            "SELECT allowed_roles FROM command_permissions WHERE code = $1", permission
        )
        await owner_conn.execute(
            "UPDATE command_permissions SET allowed_roles = '{super_user}' WHERE code = $1",
            permission,
        )
    try:
        code, _ = await refused(
            s.CreateAlarmRule(
                A.CreateAlarmRuleRequest(rule=rule(str(device), [command()])), metadata=md
            )
        )
    finally:
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE command_permissions SET allowed_roles = $2 WHERE code = $1",
                permission,
                before,
            )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # Saved by its owner; the owner is later demoted: another administrator's update that
    # gives it a command reaction is refused (the commands would run as the owner), and so is
    # moving a rule that has one to another device (its reactions are authorised again).
    created = await s.CreateAlarmRule(
        A.CreateAlarmRuleRequest(rule=rule(str(device), [])), metadata=md
    )
    commanding = await s.CreateAlarmRule(
        A.CreateAlarmRuleRequest(rule=rule(str(device), [command()], name="cmd")), metadata=md
    )
    second, _ = await factories.make_device(owner_conn, tenant.client_id)
    other = await sign_in(grpc_server, await make_account(owner_conn, "client", tenant.client_id))
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE users SET role = 'viewer' WHERE id = $1", tenant.users["client"].user_id
        )
    code, _ = await refused(
        s.UpdateAlarmRule(
            A.UpdateAlarmRuleRequest(
                rule=A.AlarmRule(id=created.rule.id, reactions=[command()]),
                update_mask=field_mask_pb2.FieldMask(paths=["reactions"]),
            ),
            metadata=other.md,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await refused(
        s.UpdateAlarmRule(
            A.UpdateAlarmRuleRequest(
                rule=A.AlarmRule(id=commanding.rule.id, device_id=str(second)),
                update_mask=field_mask_pb2.FieldMask(paths=["device_id"]),
            ),
            metadata=other.md,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # A change that leaves the scope alone does not need the owner.
    renamed = await s.UpdateAlarmRule(
        A.UpdateAlarmRuleRequest(
            rule=A.AlarmRule(id=commanding.rule.id, name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=other.md,
    )
    assert len(renamed.rule.reactions) == 1
    # Platform staff own no command reaction (the commands act as a user of the tenant).
    staff = await sign_in(grpc_server, await make_account(owner_conn, "super_user", None))
    code, _ = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(
                rule=rule(str(device), [command()]), client_id=str(tenant.client_id)
            ),
            metadata=staff.md,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_another_tenants_device_or_own_template_is_not_found_to_a_reaction(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    mine = await make_tenant(grpc_server, owner_conn)
    theirs = await make_tenant(grpc_server, owner_conn)
    their_device, _ = await factories.make_device(owner_conn, theirs.client_id)
    async with tenant_transaction(owner_conn, None, staff=True):
        code = f"own_{uuid.uuid4().hex[:8]}"
        await owner_conn.execute(
            "INSERT INTO command_templates (client_id, code, name, command_permission, "
            "parameters_schema) SELECT $1, $2, 'Own', command_permission, parameters_schema "
            "FROM command_templates WHERE code = 'ping' AND client_id IS NULL",
            theirs.client_id,
            code,
        )
    s = api(grpc_server)
    my_device, _ = await factories.make_device(owner_conn, mine.client_id)
    status, found = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(rule=rule(str(my_device), [command(code)])),
            metadata=mine.users["client"].md,
        )
    )
    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert "rule.reactions[0].command_template_code" in found
    status, _ = await refused(
        s.CreateAlarmRule(
            A.CreateAlarmRuleRequest(rule=rule(str(their_device), [command()])),
            metadata=mine.users["client"].md,
        )
    )
    assert status == grpc.StatusCode.NOT_FOUND
    # Their own template works for them.
    made = await s.CreateAlarmRule(
        A.CreateAlarmRuleRequest(rule=rule(str(their_device), [command(code)])),
        metadata=theirs.users["client"].md,
    )
    assert made.rule.reactions[0].command_template_code == code


async def test_outcomes_are_in_get_alarm_event_and_notify_reactions_on_the_stream(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    md = tenant.users["client"].md
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    s = api(grpc_server)
    notify = A.AlarmReaction(
        kind=A.ALARM_REACTION_KIND_NOTIFY, timing=A.ALARM_REACTION_TIMING_ON_RAISE_AND_CLEAR
    )
    created = await s.CreateAlarmRule(
        A.CreateAlarmRuleRequest(rule=rule(str(device), [notify, webhook()])), metadata=md
    )
    rule_id = uuid.UUID(created.rule.id)
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(seconds=5))
    stream = s.StreamAlarmEvents(A.StreamAlarmEventsRequest(start_time=start), metadata=md)
    event = await make_event(owner_conn, tenant.client_id, rule_id, device, datetime.now(UTC))
    await clear_event(owner_conn, event, datetime.now(UTC))
    got = []
    async for message in stream:
        got.append(message)
        if len(got) == 2:
            break
    stream.cancel()
    assert [m.change.kind for m in got] == [
        A.ALARM_EVENT_CHANGE_KIND_RAISED,
        A.ALARM_EVENT_CHANGE_KIND_CLEARED,
    ]
    for message, change in zip(got, (A.ALARM_EVENT_CHANGE_KIND_RAISED,
                                      A.ALARM_EVENT_CHANGE_KIND_CLEARED), strict=True):  # fmt: skip
        (notice,) = message.notifications
        assert notice.kind == A.ALARM_REACTION_KIND_NOTIFY
        assert notice.change == change
        assert notice.reaction_id == created.rule.reactions[0].id
    detail = await s.GetAlarmEvent(A.GetAlarmEventRequest(event_id=str(event)), metadata=md)
    assert [(o.kind, o.outcome) for o in detail.reaction_outcomes] == [
        (A.ALARM_REACTION_KIND_NOTIFY, A.ALARM_REACTION_OUTCOME_KIND_SENT),
        (A.ALARM_REACTION_KIND_NOTIFY, A.ALARM_REACTION_OUTCOME_KIND_SENT),
    ]
    # Another tenant sees neither the event nor its outcomes.
    other = await make_tenant(grpc_server, owner_conn)
    status, _ = await refused(
        s.GetAlarmEvent(
            A.GetAlarmEventRequest(event_id=str(event)), metadata=other.users["client"].md
        )
    )
    assert status == grpc.StatusCode.NOT_FOUND
