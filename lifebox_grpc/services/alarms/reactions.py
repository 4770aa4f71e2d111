"""AlarmService: a rule's reactions checked, saved and mapped; outcomes mapped.

A command reaction is authorised when the rule is saved, for the caller and (on an update by
someone else) for the rule's owner, whose permissions it fires with: by the same code that
checks it again when it fires (:mod:`lifebox_grpc.alarms.reactions.owner`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from lifebox.v1 import alarms_pb2
from lifebox_grpc.alarms.reactions.owner import authorize_command, owner_principal
from lifebox_grpc.alarms.reactions.signing import secret_text
from lifebox_grpc.alarms.reactions.targets import url_problem
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.commands.parameters import merge_defaults, validate_parameters
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.errors import ErrorCollector, NotFound, PermissionDenied
from lifebox_grpc.services.commands.mapping import dict_of, struct_of
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store import alarm_reactions as reaction_store
from lifebox_grpc.store import command_templates as template_store

MAX_REACTIONS = 10
MAX_RECIPIENTS = 10
KIND_NAMES = {
    alarms_pb2.ALARM_REACTION_KIND_COMMAND: "command",
    alarms_pb2.ALARM_REACTION_KIND_WEBHOOK: "webhook",
    alarms_pb2.ALARM_REACTION_KIND_NOTIFY: "notify",
    alarms_pb2.ALARM_REACTION_KIND_EMAIL: "email",
}
TIMING_NAMES = {
    alarms_pb2.ALARM_REACTION_TIMING_ON_RAISE: "raise",
    alarms_pb2.ALARM_REACTION_TIMING_ON_CLEAR: "clear",
    alarms_pb2.ALARM_REACTION_TIMING_ON_RAISE_AND_CLEAR: "both",
}
KINDS = {v: k for k, v in KIND_NAMES.items()}
TIMINGS = {v: k for k, v in TIMING_NAMES.items()}
OUTCOMES = {
    "sent": alarms_pb2.ALARM_REACTION_OUTCOME_KIND_SENT,
    "failed": alarms_pb2.ALARM_REACTION_OUTCOME_KIND_FAILED,
    "retried": alarms_pb2.ALARM_REACTION_OUTCOME_KIND_RETRIED,
    "skipped": alarms_pb2.ALARM_REACTION_OUTCOME_KIND_SKIPPED,
}
PHASES = {
    "raise": alarms_pb2.ALARM_EVENT_CHANGE_KIND_RAISED,
    "clear": alarms_pb2.ALARM_EVENT_CHANGE_KIND_CLEARED,
}


@dataclass(frozen=True)
class Draft:
    """A reaction as given, checked for shape; its template is resolved when saved."""

    fields: reaction_store.ReactionFields
    template_code: str | None
    path: str


def reaction_drafts(
    errors: ErrorCollector, rule: alarms_pb2.AlarmRule, settings: Settings, prefix: str = "rule"
) -> list[Draft]:
    """The rule message's reactions; every problem a field violation."""
    if len(rule.reactions) > MAX_REACTIONS:
        errors.add(f"{prefix}.reactions", f"at most {MAX_REACTIONS} reactions")
    drafts = []
    for i, r in enumerate(rule.reactions):
        p = f"{prefix}.reactions[{i}]."
        kind = KIND_NAMES.get(r.kind)
        if kind is None:
            errors.add(p + "kind", "required: COMMAND, WEBHOOK, NOTIFY or EMAIL")
        timing = TIMING_NAMES.get(r.timing)
        if timing is None:
            errors.add(p + "timing", "required: ON_RAISE, ON_CLEAR or ON_RAISE_AND_CLEAR")
        reaction_id = None
        if r.id:
            try:
                reaction_id = uuid.UUID(r.id)
            except ValueError:
                errors.add(p + "id", "is not a UUID")
        unused = {
            "command_template_code": bool(r.command_template_code) and kind != "command",
            "parameters": r.HasField("parameters") and kind != "command",
            "webhook_url": bool(r.webhook_url) and kind != "webhook",
            "email_to": bool(r.email_to) and kind != "email",
        }
        for name, wrong in unused.items():
            if wrong:
                errors.add(p + name, f"not used by {kind or 'this'} reactions")
        if kind == "command" and not r.command_template_code:
            errors.add(p + "command_template_code", "required for COMMAND reactions")
        if kind == "webhook":
            problem = url_problem(r.webhook_url, prod=settings.mode is Mode.PROD)
            if not r.webhook_url:
                errors.add(p + "webhook_url", "required for WEBHOOK reactions")
            elif problem is not None:
                errors.add(p + "webhook_url", problem)
        if kind == "email":
            if not 1 <= len(r.email_to) <= MAX_RECIPIENTS:
                errors.add(p + "email_to", f"1 to {MAX_RECIPIENTS} recipients")
            for j, address in enumerate(r.email_to):
                local, at, domain = address.partition("@")
                if not (local and at and "." in domain) or len(address) > 254:
                    errors.add(f"{p}email_to[{j}]", "is not an e-mail address")
        fields = reaction_store.ReactionFields(
            kind=kind or "notify",
            timing=timing or "raise",
            parameters=dict_of(r.parameters) if kind == "command" else None,
            webhook_url=r.webhook_url if kind == "webhook" else None,
            email_to=tuple(r.email_to) if kind == "email" else (),
            id=reaction_id,
        )
        drafts.append(Draft(fields, r.command_template_code or None, p.rstrip(".")))
    return drafts


@dataclass(frozen=True)
class Saved:
    reactions: list[reaction_store.Reaction]
    webhook_secret: str  # "" unless made now


async def save_reactions(
    conn: asyncpg.Connection,
    principal: Principal,
    *,
    client_id: uuid.UUID,
    rule_id: uuid.UUID,
    owner_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
    drafts: list[Draft],
) -> Saved:
    """Resolve and authorise the drafts, then make them the rule's reactions (in the
    caller's transaction). PERMISSION_DENIED when the caller, or the owner, may not send a
    command reaction's template; INVALID_ARGUMENT for unknown templates, ids or parameters."""
    known = await reaction_store.existing_ids(conn, rule_id)
    errors = ErrorCollector()
    resolved: list[reaction_store.ReactionFields] = []
    commanders = [principal]
    if any(d.fields.kind == "command" for d in drafts):
        if principal.is_staff:
            raise PermissionDenied(
                "command reactions act as their rule's owner, a user of the tenant: "
                "platform staff cannot own one"
            )
        if owner_id is not None and owner_id != principal.user_id:
            owner = await owner_principal(conn, owner_id, client_id)
            if owner is None:
                raise PermissionDenied("the rule's owner is gone: its command reactions cannot act")
            commanders.append(owner)
    for draft in drafts:
        fields = draft.fields
        if fields.id is not None and fields.id not in known:
            errors.add(draft.path + ".id", "is not a reaction of this rule")
        if fields.kind != "command" or draft.template_code is None:
            resolved.append(fields)
            continue
        template = await template_store.template_by_code(conn, draft.template_code, client_id)
        if template is None:
            errors.add(draft.path + ".command_template_code", "no such template")
            continue
        merged = merge_defaults(template.default_parameters, fields.parameters or {})
        for path, why in validate_parameters(
            f"{draft.path}.parameters", template.parameters_schema, merged
        ):
            errors.add(path, why)
        await authorize_command(conn, principal, template, device_id)
        for owner in commanders[1:]:
            try:
                await authorize_command(conn, owner, template, device_id)
            except (NotFound, PermissionDenied) as exc:
                raise PermissionDenied(
                    f"the rule's owner, whose permissions its commands use, may not send "
                    f"them: {exc.message}"
                ) from exc
        resolved.append(
            reaction_store.ReactionFields(
                kind="command", timing=fields.timing, command_template_id=template.id,
                parameters=fields.parameters, id=fields.id,
            )
        )  # fmt: skip
    errors.raise_if_any()
    saved = await reaction_store.replace_reactions(conn, client_id, rule_id, resolved)
    secret = None
    if any(r.kind == "webhook" for r in saved):
        secret = await reaction_store.ensure_webhook_secret(conn, client_id, rule_id)
    return Saved(saved, secret_text(secret) if secret else "")


def reaction_pb(reaction: reaction_store.Reaction) -> alarms_pb2.AlarmReaction:
    out = alarms_pb2.AlarmReaction(
        id=str(reaction.id),
        kind=KINDS[reaction.kind],
        timing=TIMINGS[reaction.timing],
        command_template_code=reaction.template_code or "",
        webhook_url=reaction.webhook_url or "",
        email_to=list(reaction.email_to),
        failing=reaction.failing,
    )
    if reaction.kind == "command":
        params: Any = struct_of(reaction.parameters)
        out.parameters.CopyFrom(params)
    return out


def outcome_pb(outcome: reaction_store.Outcome) -> alarms_pb2.AlarmReactionOutcome:
    return alarms_pb2.AlarmReactionOutcome(
        reaction_id=str(outcome.reaction_id),
        kind=KINDS[outcome.kind],
        change=PHASES[outcome.phase],
        outcome=OUTCOMES[outcome.outcome],
        reason=outcome.reason,
        attempt=outcome.attempt,
        command_id=str(outcome.command_id) if outcome.command_id else "",
        record_time=timestamp(outcome.recorded_at),
    )


def rule_with_reactions(
    rule: alarms_pb2.AlarmRule, reactions: list[reaction_store.Reaction]
) -> alarms_pb2.AlarmRule:
    rule.reactions.extend(reaction_pb(r) for r in reactions)
    return rule


async def rules_with_reactions(
    conn: asyncpg.Connection, rules: list[alarms_pb2.AlarmRule]
) -> list[alarms_pb2.AlarmRule]:
    """The rule messages with their reactions (one query for all)."""
    found = await reaction_store.reactions_of(conn, [uuid.UUID(r.id) for r in rules])
    return [rule_with_reactions(r, found.get(uuid.UUID(r.id), [])) for r in rules]


async def stored_drafts(
    conn: asyncpg.Connection, errors: ErrorCollector, rule_id: uuid.UUID, settings: Settings
) -> list[Draft]:
    """The rule's stored reactions as drafts (to authorise them again for a new scope)."""
    probe = alarms_pb2.AlarmRule(id=str(rule_id))
    (probe,) = await rules_with_reactions(conn, [probe])
    for r in probe.reactions:
        r.failing = False
    return reaction_drafts(errors, probe, settings)
