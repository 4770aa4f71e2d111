"""AlarmService: rules (create, get, list, update, delete, enable) and the dry run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox.v1 import alarms_pb2
from lifebox_grpc.alarms.conditions import Rule, compile_rule
from lifebox_grpc.alarms.evaluator import evaluate_device
from lifebox_grpc.auth.permissions import ALARMS_WRITE, TELEMETRY_READ
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition, NotFound
from lifebox_grpc.services.alarms import reactions  # --- alarm-reactions (issue 15)
from lifebox_grpc.services.alarms.base import AlarmRpcs, tenant_of
from lifebox_grpc.services.alarms.mapping import rule_pb
from lifebox_grpc.services.alarms.validation import check_compiles, rule_fields
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.services.device_access import ASSIGNED_ONLY_ROLES, require_device
from lifebox_grpc.store import alarm_evaluation as evaluation_store
from lifebox_grpc.store import alarm_rules as rule_store

# AlarmRule paths an update may name (the output-only ones and `enabled` are not).
UPDATABLE = frozenset({
    "name", "description", "device_id", "device_type", "device_filter", "kind", "field",
    "condition", "threshold", "low", "high", "expression", "clear_expression", "hysteresis",
    "duration_seconds", "clear_after_seconds", "window_seconds", "device_alarm_severity",
    "severity", "message_template",
    "reactions",  # --- alarm-reactions (issue 15) ---
})  # fmt: skip
SCOPE_PATHS = ("device_id", "device_type", "device_filter")
MAX_REPLAY = 100_000
MAX_REPLAY_SPAN = timedelta(days=31)


def _visible_to(principal: Principal, rule: Rule) -> bool:
    """Operators and viewers see rules of every device of the tenant only when the rule
    names no device, or names one assigned to them."""
    if principal.role not in ASSIGNED_ONLY_ROLES or rule.device_id is None:
        return True
    return rule.device_id in principal.assigned_device_ids


async def _require_rule(
    conn: Any, principal: Principal, rule_id: uuid.UUID, lock: bool = False
) -> Rule:
    rule = await rule_store.get_rule(conn, tenant_of(principal), rule_id, lock=lock)
    if rule is None or not _visible_to(principal, rule):
        raise NotFound("alarm rule not found")
    return rule


async def _check_device(conn: Any, client_id: uuid.UUID, device_id: uuid.UUID | None) -> None:
    if device_id is not None and not await rule_store.device_exists(conn, client_id, device_id):
        raise NotFound("device not found")


class RuleRpcs(AlarmRpcs):
    """Rules and their dry run."""

    async def CreateAlarmRule(
        self, request: alarms_pb2.CreateAlarmRuleRequest, context: Any
    ) -> alarms_pb2.CreateAlarmRuleResponse:
        principal = require_principal()
        errors = ErrorCollector()
        fields = rule_fields(errors, request.rule)
        check_compiles(errors, fields)
        # --- alarm-reactions (issue 15) ---
        drafts = reactions.reaction_drafts(errors, request.rule, self.settings)
        # --- end alarm-reactions ---
        if principal.is_staff:
            client_id = parse_uuid(errors, "client_id", request.client_id)
        else:
            client_id = principal.client_id
            if request.client_id and request.client_id != str(client_id):
                errors.add("client_id", "only platform staff name a client")
        errors.raise_if_any()
        require_evaluated(fields)
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            await _check_device(conn, client_id, fields.device_id)
            rule = await rule_store.create_rule(
                conn, client_id, fields, enabled=not request.create_disabled,
                created_by=principal.user_id,
            )  # fmt: skip
            # --- alarm-reactions (issue 15) ---
            saved = await reactions.save_reactions(
                conn, principal, client_id=client_id, rule_id=rule.id,
                owner_id=principal.user_id, device_id=fields.device_id, drafts=drafts,
            )  # fmt: skip
        return alarms_pb2.CreateAlarmRuleResponse(
            rule=reactions.rule_with_reactions(rule_pb(rule), saved.reactions),
            webhook_secret=saved.webhook_secret,
        )
        # --- end alarm-reactions ---

    async def GetAlarmRule(
        self, request: alarms_pb2.GetAlarmRuleRequest, context: Any
    ) -> alarms_pb2.GetAlarmRuleResponse:
        principal = require_principal()
        rule_id = require_uuid("rule_id", request.rule_id)
        async with scoped(self.pool, principal) as conn:
            rule = await _require_rule(conn, principal, rule_id)
            # --- alarm-reactions (issue 15) ---
            (found,) = await reactions.rules_with_reactions(conn, [rule_pb(rule)])
        return alarms_pb2.GetAlarmRuleResponse(rule=found)
        # --- end alarm-reactions ---

    async def ListAlarmRules(
        self, request: alarms_pb2.ListAlarmRulesRequest, context: Any
    ) -> alarms_pb2.ListAlarmRulesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        device_id = parse_uuid(errors, "device_id", request.device_id, required=False)
        key = decode_page_token(errors, request.page_token, 2)
        after = None
        if key is not None:
            try:
                after = (key[0], uuid.UUID(key[1]))
            except ValueError:
                errors.add("page_token", "is not a token this API returned")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            device = None
            if device_id is not None:
                found = await require_device(conn, principal, device_id)
                device = (found.id, found.device_type, json.dumps(found.metadata))
            rows = await rule_store.list_rules(
                conn, tenant_of(principal), device=device, after=after, limit=size + 1
            )
            # --- alarm-reactions (issue 15) ---
            visible = [r for r in rows if _visible_to(principal, r)]
            page = visible[:size]
            messages = await reactions.rules_with_reactions(conn, [rule_pb(r) for r in page])
            # --- end alarm-reactions ---
        token = encode_page_token([page[-1].name, str(page[-1].id)]) if len(rows) > size else ""
        return alarms_pb2.ListAlarmRulesResponse(rules=messages, next_page_token=token)

    async def UpdateAlarmRule(
        self, request: alarms_pb2.UpdateAlarmRuleRequest, context: Any
    ) -> alarms_pb2.UpdateAlarmRuleResponse:
        principal = require_principal()
        errors = ErrorCollector()
        rule_id = parse_uuid(errors, "rule.id", request.rule.id)
        paths = mask_paths(errors, request.update_mask, UPDATABLE)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rule = await _require_rule(conn, principal, rule_id, lock=True)
            principal.require(ALARMS_WRITE)
            # The new values over the stored rule, validated as a whole; naming one scope
            # path replaces the whole scope.
            merged = rule_pb(rule)
            if any(path in SCOPE_PATHS for path in paths):
                merged.ClearField("device_id")
                merged.ClearField("device_type")
                merged.ClearField("device_filter")
            for path in paths:
                if path != "reactions":  # --- alarm-reactions (issue 15)
                    copy_field(merged, request.rule, path)
            fields = rule_fields(errors, merged)
            check_compiles(errors, fields)
            # --- alarm-reactions (issue 15) ---
            # New reactions, or (the scope changed) the stored ones authorised again.
            drafts = None
            if "reactions" in paths:
                drafts = reactions.reaction_drafts(errors, request.rule, self.settings)
            elif any(path in SCOPE_PATHS for path in paths):
                drafts = await reactions.stored_drafts(conn, errors, rule.id, self.settings)
            # --- end alarm-reactions ---
            errors.raise_if_any()
            require_evaluated(fields)
            await _check_device(conn, rule.client_id, fields.device_id)
            updated = await rule_store.update_rule(conn, rule, fields)
            # --- alarm-reactions (issue 15) ---
            secret = ""
            if drafts is not None:
                saved = await reactions.save_reactions(
                    conn, principal, client_id=rule.client_id, rule_id=rule.id,
                    owner_id=rule.created_by, device_id=fields.device_id, drafts=drafts,
                )  # fmt: skip
                secret = saved.webhook_secret
            (message,) = await reactions.rules_with_reactions(conn, [rule_pb(updated)])
        return alarms_pb2.UpdateAlarmRuleResponse(rule=message, webhook_secret=secret)
        # --- end alarm-reactions ---

    async def DeleteAlarmRule(
        self, request: alarms_pb2.DeleteAlarmRuleRequest, context: Any
    ) -> alarms_pb2.DeleteAlarmRuleResponse:
        principal = require_principal()
        rule_id = require_uuid("rule_id", request.rule_id)
        async with scoped(self.pool, principal) as conn:
            rule = await _require_rule(conn, principal, rule_id, lock=True)
            principal.require(ALARMS_WRITE)
            await rule_store.delete_rule(conn, rule)
        return alarms_pb2.DeleteAlarmRuleResponse()

    async def SetAlarmRuleEnabled(
        self, request: alarms_pb2.SetAlarmRuleEnabledRequest, context: Any
    ) -> alarms_pb2.SetAlarmRuleEnabledResponse:
        principal = require_principal()
        rule_id = require_uuid("rule_id", request.rule_id)
        async with scoped(self.pool, principal) as conn:
            rule = await _require_rule(conn, principal, rule_id, lock=True)
            principal.require(ALARMS_WRITE)
            updated = await rule_store.set_enabled(conn, rule, request.enabled)
            # --- alarm-reactions (issue 15) ---
            (message,) = await reactions.rules_with_reactions(conn, [rule_pb(updated)])
            # --- end alarm-reactions ---
        return alarms_pb2.SetAlarmRuleEnabledResponse(rule=message)

    async def TestAlarmRule(
        self, request: alarms_pb2.TestAlarmRuleRequest, context: Any
    ) -> alarms_pb2.TestAlarmRuleResponse:
        principal = require_principal()
        errors = ErrorCollector()
        probe = alarms_pb2.AlarmRule()
        probe.CopyFrom(request.rule)
        for scope_field in ("device_id", "device_type", "device_filter"):
            probe.ClearField(scope_field)
        if not probe.name:
            probe.name = "dry run"
        fields = rule_fields(errors, probe)
        check_compiles(errors, fields)
        device_id = parse_uuid(errors, "device_id", request.device_id)
        if not request.HasField("start_time"):
            errors.add("start_time", "required")
        start = request.start_time.ToDatetime(UTC)
        end = (
            request.end_time.ToDatetime(UTC) if request.HasField("end_time") else datetime.now(UTC)
        )
        if request.HasField("start_time") and not start < end:
            errors.add("end_time", "must be after start_time")
        elif end - start > MAX_REPLAY_SPAN:
            errors.add("end_time", "at most 31 days after start_time")
        # --- alarms-eval (issue 15) ---
        if fields.kind not in ("threshold", "range", "expression", "rate"):
            errors.add("rule.kind", "dry runs replay THRESHOLD, RANGE, EXPRESSION and RATE rules")
        # --- end alarms-eval ---
        errors.raise_if_any()
        nil = uuid.UUID(int=0)
        compiled = compile_rule(Rule(nil, nil, enabled=True, **fields.__dict__))
        assert compiled is not None
        async with scoped(self.pool, principal) as conn:
            device = await require_device(conn, principal, device_id)
            principal.require(TELEMETRY_READ)
            rows = await evaluation_store.readings_between(
                conn, device.id, compiled.fields, start, end, MAX_REPLAY + 1
            )
        truncated = len(rows) > MAX_REPLAY
        rows = rows[:MAX_REPLAY]
        found, _, done = evaluate_device(
            device.id, device.name, [compiled], rows, {}, self.settings.alarm_budget_ms * 1000 * 10
        )
        events = [
            alarms_pb2.TestedAlarmEvent(
                raise_time=timestamp(e.raised_at), clear_time=timestamp(e.cleared_at),
                message=e.message or "",
                **({"trigger_value": e.trigger_value} if e.trigger_value is not None else {}),
                **({"clear_value": e.clear_value} if e.clear_value is not None else {}),
            )
            for e in found.raised
        ]  # fmt: skip
        return alarms_pb2.TestAlarmRuleResponse(
            events=events, readings_evaluated=done, truncated=truncated or done < len(rows)
        )


# --- alarms-eval (issue 15): RATE (alarms/rate.py) and DEVICE_ALARM (alarms/device_alarm.py)
# are evaluated too: nothing is refused for its kind any more ---
NOT_EVALUATED: tuple[str, ...] = ()
# --- end alarms-eval ---


def require_evaluated(fields: rule_store.RuleFields) -> None:
    """A valid rule of a kind ingest does not evaluate yet is FAILED_PRECONDITION: saved, it
    would never raise."""
    if fields.kind in NOT_EVALUATED:
        raise FailedPrecondition(
            f"{fields.kind.upper()} rules are checked but not evaluated yet; nothing would raise",
            metadata={"kind": fields.kind},
        )


def copy_field(target: alarms_pb2.AlarmRule, source: alarms_pb2.AlarmRule, path: str) -> None:
    """Copy one field of ``source`` onto ``target`` (an unset filter stays unset)."""
    if path == "device_filter":
        if source.HasField("device_filter"):
            target.device_filter.CopyFrom(source.device_filter)
    else:
        setattr(target, path, getattr(source, path))
