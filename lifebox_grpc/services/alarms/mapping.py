"""AlarmService: store rows to messages."""

from __future__ import annotations

from google.protobuf import struct_pb2

from lifebox.v1 import alarms_pb2
from lifebox_grpc.alarms.conditions import Rule
from lifebox_grpc.services.alarms.validation import CONDITION_NAMES, KIND_NAMES, SEVERITY_NAMES
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.services.devices.mapping import struct_of
from lifebox_grpc.store import alarm_events as event_store

KINDS = {v: k for k, v in KIND_NAMES.items()}
CONDITIONS = {v: k for k, v in CONDITION_NAMES.items()}
SEVERITIES = {v: k for k, v in SEVERITY_NAMES.items()}
SCOPES = {
    "device": alarms_pb2.ALARM_RULE_SCOPE_DEVICE,
    "device_type": alarms_pb2.ALARM_RULE_SCOPE_DEVICE_TYPE,
    "metadata": alarms_pb2.ALARM_RULE_SCOPE_METADATA,
    "tenant": alarms_pb2.ALARM_RULE_SCOPE_TENANT,
}
STATUSES = {
    "active_unack": alarms_pb2.ALARM_EVENT_STATUS_ACTIVE_UNACK,
    "active_ack": alarms_pb2.ALARM_EVENT_STATUS_ACTIVE_ACK,
    "cleared_unack": alarms_pb2.ALARM_EVENT_STATUS_CLEARED_UNACK,
    "cleared_ack": alarms_pb2.ALARM_EVENT_STATUS_CLEARED_ACK,
}
STATUS_NAMES = {v: k for k, v in STATUSES.items()}
CHANGES = {
    "raised": alarms_pb2.ALARM_EVENT_CHANGE_KIND_RAISED,
    "acknowledged": alarms_pb2.ALARM_EVENT_CHANGE_KIND_ACKNOWLEDGED,
    "cleared": alarms_pb2.ALARM_EVENT_CHANGE_KIND_CLEARED,
}


def rule_pb(rule: Rule) -> alarms_pb2.AlarmRule:
    threshold = rule.threshold_high if rule.kind in ("threshold", "rate") else None
    return alarms_pb2.AlarmRule(
        id=str(rule.id),
        name=rule.name,
        description=rule.description,
        device_id=str(rule.device_id) if rule.device_id else "",
        device_type=rule.device_type or "",
        device_filter=struct_of(rule.device_filter),
        scope=SCOPES[rule.scope],
        kind=KINDS[rule.kind],
        field=rule.field or "",
        condition=CONDITIONS.get(rule.condition or "", alarms_pb2.ALARM_CONDITION_UNSPECIFIED),
        threshold=threshold or 0.0,
        low=rule.threshold_low if rule.kind == "range" and rule.threshold_low is not None else 0.0,
        high=rule.threshold_high
        if rule.kind == "range" and rule.threshold_high is not None
        else 0.0,
        expression=rule.expression or "",
        clear_expression=rule.clear_expression or "",
        hysteresis=rule.hysteresis,
        duration_seconds=rule.duration_s,
        clear_after_seconds=rule.clear_after_s,
        window_seconds=rule.window_s or 0,
        device_alarm_severity=SEVERITIES.get(
            rule.device_alarm_severity or "", alarms_pb2.ALARM_SEVERITY_UNSPECIFIED
        ),
        severity=SEVERITIES[rule.severity],
        message_template=rule.message_template or "",
        enabled=rule.enabled,
        created_by=str(rule.created_by) if rule.created_by else "",
        create_time=timestamp(rule.created_at),
        update_time=timestamp(rule.updated_at),
    )


def event_pb(event: event_store.Event) -> alarms_pb2.AlarmEvent:
    details = struct_pb2.Struct()
    details.update(event.details)
    out = alarms_pb2.AlarmEvent(
        id=str(event.id),
        rule_id=str(event.rule_id),
        device_id=str(event.device_id),
        severity=SEVERITIES[event.severity],
        status=STATUSES[event.status],
        raise_time=timestamp(event.raised_at),
        clear_time=timestamp(event.cleared_at),
        acknowledge_time=timestamp(event.acknowledged_at),
        message=event.message or "",
        details=details,
    )
    if event.trigger_value is not None:
        out.trigger_value = event.trigger_value
    if event.clear_value is not None:
        out.clear_value = event.clear_value
    return out


def change_pb(change: event_store.Change) -> alarms_pb2.AlarmEventChange:
    return alarms_pb2.AlarmEventChange(
        kind=CHANGES[change.change],
        status=STATUSES[change.status],
        change_time=timestamp(change.changed_at),
    )


def acknowledgment_pb(ack: event_store.Acknowledgment) -> alarms_pb2.AlarmAcknowledgment:
    return alarms_pb2.AlarmAcknowledgment(
        id=str(ack.id),
        user_id=str(ack.user_id) if ack.user_id else "",
        acknowledge_time=timestamp(ack.acknowledged_at),
        note=ack.note or "",
    )
