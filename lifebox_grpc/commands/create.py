"""The one way a command comes to exist, for SendCommand and for alarm reactions alike.

:func:`create_command` runs inside the caller's tenant transaction: it resolves nothing about
who may send (the API checks that first; a rule was authorised when it was saved), merges the
template's defaults under the parameters, validates them with the template's JSON Schema,
honours an idempotency key, and stores the command, its ``pending`` trail row and its
outbox job in one statement that also checks the device may receive it and serialises the
device's sends (one round trip). A dispatcher sees it only once the
caller's transaction commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lifebox_grpc.commands.parameters import merge_defaults, validate_parameters
from lifebox_grpc.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from lifebox_grpc.store import commands as command_store
from lifebox_grpc.store.command_templates import Template

MIN_TIMEOUT_S = 1
MAX_TIMEOUT_S = 7 * 24 * 3600
DELIVERABLE = ("provisioned", "active")


@dataclass(frozen=True)
class Requester:
    """Who asks for a command: a user, or an alarm rule (``rule_id``) acting for the platform."""

    user_id: uuid.UUID | None = None
    rule_id: uuid.UUID | None = None
    detail: dict[str, Any] | None = None

    @classmethod
    def user(cls, user_id: uuid.UUID) -> Requester:
        return cls(user_id=user_id)

    @classmethod
    def rule(cls, rule_id: uuid.UUID, **detail: Any) -> Requester:
        return cls(rule_id=rule_id, detail={"alarm_rule_id": str(rule_id), **detail})

    @property
    def key(self) -> str:
        """The namespace of its idempotency keys."""
        return f"user:{self.user_id}" if self.user_id else f"rule:{self.rule_id}"

    def actor(self) -> command_store.Actor:
        if self.user_id is not None:
            return command_store.Actor("user", self.user_id, self.detail)
        return command_store.Actor("system", None, self.detail)


@dataclass(frozen=True)
class Created:
    command: command_store.Command
    created: bool  # False: an earlier command of the same idempotency key


async def create_command(
    conn: asyncpg.Connection,
    *,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    template: Template,
    parameters: dict[str, Any],
    requester: Requester,
    timeout_s: int | None = None,
    idempotency_key: str | None = None,
    field_prefix: str = "",
) -> Created:
    """Store a pending command for the device (see the module). Raises InvalidArgument
    (each bad parameter path as ``parameters.<path>``), FailedPrecondition (disabled template,
    device that cannot receive, suspended client) or NotFound (device not of ``client_id``)."""
    if idempotency_key:
        earlier = await command_store.lock_idempotency_key(
            conn, client_id, requester.key, idempotency_key
        )
        if earlier is not None:
            found = await command_store.get_command(conn, earlier, client_id, None)
            if found is not None:
                return Created(found, created=False)
    if not template.enabled:
        raise FailedPrecondition(f"template {template.code!r} is disabled")
    if template.client_id is not None and template.client_id != client_id:
        raise NotFound("template not found")
    merged = merge_defaults(template.default_parameters, parameters)
    problems = validate_parameters(f"{field_prefix}parameters", template.parameters_schema, merged)
    lifetime = template.timeout_s if timeout_s is None else timeout_s
    if not MIN_TIMEOUT_S <= lifetime <= MAX_TIMEOUT_S:
        problems.append((f"{field_prefix}timeout", "must be between 1 second and 7 days"))
    if problems:
        raise InvalidArgument([FieldViolation(path, why) for path, why in problems])
    stored = await command_store.insert_command(
        conn,
        command_store.NewCommand(
            client_id=client_id,
            device_id=device_id,
            template_id=template.id,
            command_type=template.code,
            parameters=merged,
            expires_at=datetime.now(UTC) + timedelta(seconds=lifetime),
            max_retries=template.max_retries,
            issued_by=requester.user_id,
        ),
        requester.actor(),
        DELIVERABLE,
    )
    if isinstance(stored, command_store.Refused):
        if stored.client_status is None:
            raise NotFound("device not found")
        if stored.client_status != "active":
            raise FailedPrecondition(
                f"the client is {stored.client_status}: no commands are delivered"
            )
        raise FailedPrecondition(f"the device is {stored.device_status}: it receives no commands")
    command = stored
    if idempotency_key:
        await command_store.remember_idempotency_key(
            conn, client_id, requester.key, idempotency_key, command.id
        )
    return Created(command, created=True)
