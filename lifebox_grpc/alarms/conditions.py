"""A rule's condition as two CEL expressions: one that raises, one that clears.

Every kind that reads a reading's fields becomes expressions evaluated by the native core
(threshold and range rules included), so one engine evaluates every rule and hysteresis is
just the clearing expression: ``t > 30`` raises, ``t <= 28`` clears with a hysteresis of 2.
Field names are checked against the known telemetry columns before they are written into an
expression, and numbers are written with ``repr`` (exact, and always a double literal).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifebox_grpc.native import COLUMN_TYPES, Expression

# Fields a rule may name: the typed numeric and boolean telemetry columns.
NUMERIC_FIELDS: frozenset[str] = frozenset(
    name for name, kind in COLUMN_TYPES if kind in ("double precision", "bigint")
)
BOOLEAN_FIELDS: frozenset[str] = frozenset(name for name, kind in COLUMN_TYPES if kind == "boolean")
RULE_FIELDS: frozenset[str] = NUMERIC_FIELDS | BOOLEAN_FIELDS

KINDS = ("threshold", "range", "expression", "rate", "no_data", "device_alarm")
THRESHOLD_CONDITIONS = ("gt", "gte", "lt", "lte", "eq", "neq")
RANGE_CONDITIONS = ("between", "outside")
RATE_CONDITIONS = ("gt", "gte", "lt", "lte")
SEVERITIES = ("info", "warning", "minor", "major", "critical")
# Kinds evaluated reading by reading through expressions.
READING_KINDS = ("threshold", "range", "expression", "rate")


@dataclass(frozen=True)
class Rule:
    """An alarm rule as stored (``alarm_rules``)."""

    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    description: str
    kind: str
    device_id: uuid.UUID | None
    device_type: str | None
    device_filter: dict[str, Any] | None
    field: str | None
    condition: str | None
    threshold_low: float | None
    threshold_high: float | None
    expression: str | None
    clear_expression: str | None
    hysteresis: float
    duration_s: int
    clear_after_s: int
    window_s: int | None
    device_alarm_severity: str | None
    severity: str
    message_template: str | None
    enabled: bool
    created_by: uuid.UUID | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def scope(self) -> str:
        if self.device_id is not None:
            return "device"
        if self.device_type is not None:
            return "device_type"
        if self.device_filter is not None:
            return "metadata"
        return "tenant"

    def applies_to(
        self, device_id: uuid.UUID, device_type: str, metadata_matches: frozenset[str]
    ) -> bool:
        """Whether a device of the rule's tenant is in its scope; ``metadata_matches`` are
        the device filters (as :func:`filter_key`) the device's metadata contains."""
        if self.device_id is not None:
            return self.device_id == device_id
        if self.device_type is not None:
            return self.device_type == device_type
        if self.device_filter is not None:
            return filter_key(self.device_filter) in metadata_matches
        return True


def filter_key(device_filter: dict[str, Any]) -> str:
    """A device filter as canonical JSON (one key per distinct filter)."""
    return json.dumps(device_filter, sort_keys=True, separators=(",", ":"))


def _num(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("thresholds are finite")
    return repr(float(value))


def condition_sources(rule: Rule) -> tuple[str, str] | None:
    """(raising, clearing) CEL sources of a reading-evaluated rule; None for other kinds.

    The caller has validated the rule (field known, bounds set and finite)."""
    h = rule.hysteresis
    if rule.kind == "expression":
        assert rule.expression is not None
        return rule.expression, rule.clear_expression or f"!({rule.expression})"
    f = rule.field
    if rule.kind == "threshold":
        t = rule.threshold_high
        if f is None or t is None:
            raise ValueError("a threshold rule has a field and a threshold")
        return {
            "gt": (f"{f} > {_num(t)}", f"{f} <= {_num(t - h)}"),
            "gte": (f"{f} >= {_num(t)}", f"{f} < {_num(t - h)}"),
            "lt": (f"{f} < {_num(t)}", f"{f} >= {_num(t + h)}"),
            "lte": (f"{f} <= {_num(t)}", f"{f} > {_num(t + h)}"),
            "eq": (f"{f} == {_num(t)}", f"{f} != {_num(t)}"),
            "neq": (f"{f} != {_num(t)}", f"{f} == {_num(t)}"),
        }[rule.condition or ""]
    if rule.kind == "range":
        lo, hi = rule.threshold_low, rule.threshold_high
        if f is None or lo is None or hi is None:
            raise ValueError("a range rule has a field and both bounds")
        if rule.condition == "between":
            return (
                f"{f} >= {_num(lo)} && {f} <= {_num(hi)}",
                f"{f} < {_num(lo - h)} || {f} > {_num(hi + h)}",
            )
        return (
            f"{f} < {_num(lo)} || {f} > {_num(hi)}",
            f"{f} >= {_num(lo + h)} && {f} <= {_num(hi - h)}",
        )
    return None


@dataclass(frozen=True)
class CompiledRule:
    """A reading-evaluated rule with its two checked expressions and the fields they read."""

    rule: Rule
    raise_expr: Expression
    clear_expr: Expression
    fields: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class RateRule:
    """A rate rule: the change per second of ``field`` over ``window_s``, compared.

    The rate at a reading is (its value - the value of the earliest reading with the field
    in the window before it) / the seconds between them; a reading with no earlier value
    in the window has no rate (unknown: changes nothing). Hysteresis narrows the clearing
    comparison like a threshold's."""

    rule: Rule
    window_us: int
    raising: tuple[str, float]  # (comparison, bound)
    clearing: tuple[str, float]

    @property
    def fields(self) -> tuple[str, ...]:
        assert self.rule.field is not None
        return (self.rule.field,)


_NEGATION = {"gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt"}


def rate_rule(rule: Rule) -> RateRule:
    t, h, window = rule.threshold_high, rule.hysteresis, rule.window_s
    if rule.field is None or t is None or window is None or rule.condition not in _NEGATION:
        raise ValueError("a rate rule has a field, a comparison, a threshold and a window")
    _num(t)
    cond = rule.condition
    bound = t - h if cond in ("gt", "gte") else t + h
    return RateRule(rule, window * 1_000_000, (cond, t), (_NEGATION[cond], bound))


def compare(op: str, value: float, bound: float) -> bool:
    if op == "gt":
        return value > bound
    if op == "gte":
        return value >= bound
    if op == "lt":
        return value < bound
    return value <= bound


def compile_rule(rule: Rule) -> CompiledRule | RateRule | None:
    """The rule's expressions (or its rate comparison), or None when its kind is not
    evaluated per reading.

    Raises ExpressionError for an expression that does not check (a stored rule was checked
    when saved, so this means a rule from an older engine)."""
    if rule.kind == "rate":
        return rate_rule(rule)
    sources = condition_sources(rule)
    if sources is None:
        return None
    raising, clearing = Expression(sources[0]), Expression(sources[1])
    fields = tuple(sorted({*raising.fields, *clearing.fields}))
    return CompiledRule(rule, raising, clearing, fields)
