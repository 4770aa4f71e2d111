"""AlarmService: a rule message checked and turned into the store's fields.

Every problem is a BadRequest field violation; an expression is checked by the native core
that evaluates it at ingest, and each of its problems names its position.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from google.protobuf import json_format

from lifebox.v1 import alarms_pb2
from lifebox_grpc.alarms.conditions import (
    RANGE_CONDITIONS,
    RATE_CONDITIONS,
    RULE_FIELDS,
    THRESHOLD_CONDITIONS,
    Rule,
    condition_sources,
)
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.native import check_expression
from lifebox_grpc.services.common import check_text, parse_uuid
from lifebox_grpc.store.alarm_rules import RuleFields

MAX_DURATION_S = 7 * 86_400
MAX_DESCRIPTION = 2000
MAX_TEMPLATE = 500
MAX_FILTER_BYTES = 4096

KIND_NAMES = {
    alarms_pb2.ALARM_RULE_KIND_THRESHOLD: "threshold",
    alarms_pb2.ALARM_RULE_KIND_RANGE: "range",
    alarms_pb2.ALARM_RULE_KIND_EXPRESSION: "expression",
    alarms_pb2.ALARM_RULE_KIND_RATE: "rate",
    alarms_pb2.ALARM_RULE_KIND_NO_DATA: "no_data",
    alarms_pb2.ALARM_RULE_KIND_DEVICE_ALARM: "device_alarm",
}
CONDITION_NAMES = {
    alarms_pb2.ALARM_CONDITION_GT: "gt",
    alarms_pb2.ALARM_CONDITION_GTE: "gte",
    alarms_pb2.ALARM_CONDITION_LT: "lt",
    alarms_pb2.ALARM_CONDITION_LTE: "lte",
    alarms_pb2.ALARM_CONDITION_EQ: "eq",
    alarms_pb2.ALARM_CONDITION_NEQ: "neq",
    alarms_pb2.ALARM_CONDITION_BETWEEN: "between",
    alarms_pb2.ALARM_CONDITION_OUTSIDE: "outside",
}
SEVERITY_NAMES = {
    alarms_pb2.ALARM_SEVERITY_INFO: "info",
    alarms_pb2.ALARM_SEVERITY_WARNING: "warning",
    alarms_pb2.ALARM_SEVERITY_MINOR: "minor",
    alarms_pb2.ALARM_SEVERITY_MAJOR: "major",
    alarms_pb2.ALARM_SEVERITY_CRITICAL: "critical",
}


def check_cel(errors: ErrorCollector, path: str, source: str) -> list[str]:
    """The fields a CEL source reads; each problem (and each unknown field) a violation."""
    fields, problems = check_expression(source)
    for p in problems:
        errors.add(path, f"{p.message} (at characters {p.start}-{p.end}; {p.code})")
    for name in fields:
        if name not in RULE_FIELDS:
            errors.add(path, f"unknown field {name!r}: a numeric or boolean telemetry field")
    return fields


def _duration(errors: ErrorCollector, path: str, value: int) -> int:
    if value < 0 or value > MAX_DURATION_S:
        errors.add(path, f"must be 0 to {MAX_DURATION_S} seconds")
    return value


def _finite(errors: ErrorCollector, path: str, value: float) -> float:
    if not math.isfinite(value):
        errors.add(path, "must be a finite number")
    return value


def rule_fields(
    errors: ErrorCollector, rule: alarms_pb2.AlarmRule, prefix: str = "rule"
) -> RuleFields:
    """The store's fields of a rule message; problems are added to ``errors``."""
    p = f"{prefix}."
    check_text(errors, p + "name", rule.name, max_length=200)
    if len(rule.description) > MAX_DESCRIPTION:
        errors.add(p + "description", f"must be at most {MAX_DESCRIPTION} characters")
    if len(rule.message_template) > MAX_TEMPLATE:
        errors.add(p + "message_template", f"must be at most {MAX_TEMPLATE} characters")
    device_id = parse_uuid(errors, p + "device_id", rule.device_id, required=False)
    device_type = rule.device_type or None
    if device_type is not None and len(device_type) > 100:
        errors.add(p + "device_type", "must be at most 100 characters")
    device_filter: dict[str, Any] | None = None
    if rule.HasField("device_filter"):
        device_filter = json_format.MessageToDict(rule.device_filter)
        if not device_filter:
            errors.add(p + "device_filter", "must name at least one key")
        elif rule.device_filter.ByteSize() > MAX_FILTER_BYTES:
            errors.add(p + "device_filter", f"must be at most {MAX_FILTER_BYTES} bytes")
    if sum(x is not None for x in (device_id, device_type, device_filter)) > 1:
        errors.add(p + "device_id", "set at most one of device_id, device_type, device_filter")
    kind = KIND_NAMES.get(rule.kind)
    if kind is None:
        errors.add(
            p + "kind", "required: THRESHOLD, RANGE, EXPRESSION, RATE, NO_DATA or DEVICE_ALARM"
        )
    severity = SEVERITY_NAMES.get(rule.severity)
    if severity is None:
        errors.add(p + "severity", "required")
    condition = CONDITION_NAMES.get(rule.condition)
    field = rule.field or None
    hysteresis = _finite(errors, p + "hysteresis", rule.hysteresis)
    if hysteresis < 0:
        errors.add(p + "hysteresis", "must not be negative")
    duration_s = _duration(errors, p + "duration_seconds", rule.duration_seconds)
    clear_after_s = _duration(errors, p + "clear_after_seconds", rule.clear_after_seconds)
    window_s: int | None = None
    low = high = None
    expression = clear_expression = None
    device_alarm_severity = None

    def need_field(allowed: frozenset[str] = RULE_FIELDS) -> None:
        if field is None:
            errors.add(p + "field", "required for this kind")
        elif field not in allowed:
            errors.add(
                p + "field", f"unknown field {field!r}: a numeric or boolean telemetry field"
            )

    if kind in ("threshold", "rate"):
        need_field()
        allowed = THRESHOLD_CONDITIONS if kind == "threshold" else RATE_CONDITIONS
        if condition not in allowed:
            errors.add(p + "condition", f"must be one of {', '.join(c.upper() for c in allowed)}")
        high = _finite(errors, p + "threshold", rule.threshold)
        if kind == "rate":
            window_s = rule.window_seconds
            if not 1 <= window_s <= 86_400:
                errors.add(p + "window_seconds", "must be 1 to 86400 seconds")
    elif kind == "range":
        need_field()
        if condition not in RANGE_CONDITIONS:
            errors.add(p + "condition", "must be BETWEEN or OUTSIDE")
        low = _finite(errors, p + "low", rule.low)
        high = _finite(errors, p + "high", rule.high)
        if low > high:
            errors.add(p + "high", "must be at least low")
        elif condition == "outside" and 2 * hysteresis > high - low:
            errors.add(p + "hysteresis", "leaves no clearing band inside [low, high]")
    elif kind == "expression":
        if not rule.expression:
            errors.add(p + "expression", "required for EXPRESSION rules")
        else:
            expression = rule.expression
            check_cel(errors, p + "expression", expression)
        if rule.clear_expression:
            clear_expression = rule.clear_expression
            check_cel(errors, p + "clear_expression", clear_expression)
        if field is not None and field not in RULE_FIELDS:
            errors.add(p + "field", f"unknown field {field!r}")
        condition = None
    elif kind == "no_data":
        if field is not None:
            need_field()
        if duration_s < 1:
            errors.add(p + "duration_seconds", "NO_DATA needs the silence, at least 1 second")
        condition = "absent" if field is not None else None
    elif kind == "device_alarm":
        device_alarm_severity = SEVERITY_NAMES.get(rule.device_alarm_severity)
        if device_alarm_severity is None:
            errors.add(p + "device_alarm_severity", "required for DEVICE_ALARM rules")
        field = condition = None
    if kind != "expression" and (rule.expression or rule.clear_expression):
        errors.add(p + "expression", "only EXPRESSION rules have expressions")
    if kind in ("threshold", "rate") and condition not in (None, *THRESHOLD_CONDITIONS):
        condition = None
    return RuleFields(
        name=rule.name,
        description=rule.description,
        kind=kind or "threshold",
        device_id=device_id,
        device_type=device_type,
        device_filter=device_filter,
        field=field,
        condition=condition,
        threshold_low=low,
        threshold_high=high,
        expression=expression,
        clear_expression=clear_expression,
        hysteresis=hysteresis,
        duration_s=duration_s,
        clear_after_s=clear_after_s,
        window_s=window_s,
        device_alarm_severity=device_alarm_severity,
        severity=severity or "warning",
        message_template=rule.message_template or None,
    )


def check_compiles(errors: ErrorCollector, fields: RuleFields, prefix: str = "rule") -> None:
    """The generated conditions check too (thresholds near the double range overflow)."""
    if errors.violations:
        return
    probe = Rule(uuid.UUID(int=0), uuid.UUID(int=0), enabled=True, **fields.__dict__)
    try:
        sources = condition_sources(probe)
    except ValueError as exc:
        errors.add(f"{prefix}.threshold", str(exc))
        return
    for source in sources or ():
        _, problems = check_expression(source)
        if problems:
            errors.add(f"{prefix}.threshold", "the thresholds make no valid condition")
