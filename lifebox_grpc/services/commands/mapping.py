"""CommandService: stored commands, trails, templates and grants as protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from lifebox.v1 import commands_pb2
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store import command_grants as grant_store
from lifebox_grpc.store import command_templates as template_store
from lifebox_grpc.store import commands as command_store

STATUS_TO_PB = {
    "pending": commands_pb2.COMMAND_STATUS_PENDING,
    "sent": commands_pb2.COMMAND_STATUS_SENT,
    "delivered": commands_pb2.COMMAND_STATUS_DELIVERED,
    "acknowledged": commands_pb2.COMMAND_STATUS_ACKNOWLEDGED,
    "completed": commands_pb2.COMMAND_STATUS_COMPLETED,
    "failed": commands_pb2.COMMAND_STATUS_FAILED,
    "expired": commands_pb2.COMMAND_STATUS_EXPIRED,
    "cancelled": commands_pb2.COMMAND_STATUS_CANCELLED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}
ACTOR_TO_PB = {
    "user": commands_pb2.ACTOR_KIND_USER,
    "device": commands_pb2.ACTOR_KIND_DEVICE,
    "system": commands_pb2.ACTOR_KIND_SYSTEM,
}


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: give back integers where they are whole (JSON has one
    number type; devices and schemas expect 5, not 5.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def dict_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _integral(json_format.MessageToDict(struct))
    return result


def struct_of(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    out = struct_pb2.Struct()
    out.update(value if isinstance(value, Mapping) else {"value": value})
    return out


def _text(value: object) -> str:
    return "" if value is None else str(value)


def command_pb(c: command_store.Command) -> commands_pb2.Command:
    return commands_pb2.Command(
        id=str(c.id),
        client_id=str(c.client_id),
        device_id=str(c.device_id),
        template_id=str(c.template_id),
        command_type=c.command_type,
        parameters=struct_of(c.parameters),
        status=STATUS_TO_PB[c.status],
        issued_by=_text(c.issued_by),
        issue_time=timestamp(c.issued_at),
        send_time=timestamp(c.sent_at),
        deliver_time=timestamp(c.delivered_at),
        complete_time=timestamp(c.completed_at),
        expire_time=timestamp(c.expires_at),
        retries=c.retries,
        max_retries=c.max_retries,
        result=struct_of(c.result),
        error=c.error or "",
    )


def execution_pb(e: command_store.Execution) -> commands_pb2.CommandExecution:
    return commands_pb2.CommandExecution(
        id=str(e.id),
        command_id=str(e.command_id),
        from_status=STATUS_TO_PB.get(e.from_status or "", commands_pb2.COMMAND_STATUS_UNSPECIFIED),
        to_status=STATUS_TO_PB[e.to_status],
        actor_kind=ACTOR_TO_PB[e.actor_kind],
        actor_user_id=_text(e.actor_user_id),
        detail=struct_of(e.detail),
        time=timestamp(e.at),
    )


def template_pb(t: template_store.Template) -> commands_pb2.CommandTemplate:
    return commands_pb2.CommandTemplate(
        id=str(t.id),
        client_id=_text(t.client_id),
        code=t.code,
        name=t.name,
        description=t.description,
        command_permission=t.command_permission,
        parameters_schema=struct_of(t.parameters_schema),
        default_parameters=struct_of(t.default_parameters),
        timeout=duration_pb2.Duration(seconds=t.timeout_s),
        max_retries=t.max_retries,
        enabled=t.enabled,
        create_time=timestamp(t.created_at),
        update_time=timestamp(t.updated_at),
    )


def permission_pb(p: template_store.Permission) -> commands_pb2.CommandPermission:
    return commands_pb2.CommandPermission(
        code=p.code,
        name=p.name,
        description=p.description,
        category=p.category,
        risk_level=p.risk_level,
        requires_confirmation=p.requires_confirmation,
        allowed_roles=list(p.allowed_roles or ()),
    )


def grant_pb(g: grant_store.Grant) -> commands_pb2.CommandGrant:
    return commands_pb2.CommandGrant(
        id=str(g.id),
        client_id=str(g.client_id),
        user_id=str(g.user_id),
        command_permission=g.command_permission,
        device_id=_text(g.device_id),
        can_delegate=g.can_delegate,
        granted_by=_text(g.granted_by),
        parent_grant_id=_text(g.parent_grant_id),
        grant_time=timestamp(g.granted_at),
        expire_time=timestamp(g.expires_at),
        revoke_time=timestamp(g.revoked_at),
        revoked_by=_text(g.revoked_by),
    )
