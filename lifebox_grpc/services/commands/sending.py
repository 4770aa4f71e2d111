"""CommandService: SendCommand and BatchSendCommand."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import grpc

from lifebox.v1 import commands_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.commands.create import Requester, create_command
from lifebox_grpc.errors import (
    AlreadyExists,
    DomainError,
    ErrorCollector,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from lifebox_grpc.services.commands.access import require_confirmation, require_sendable
from lifebox_grpc.services.commands.base import CommandRpcs
from lifebox_grpc.services.commands.mapping import command_pb, dict_of
from lifebox_grpc.services.common import parse_uuid, scoped
from lifebox_grpc.services.device_access import parse_device_ids, require_device
from lifebox_grpc.store import command_templates as template_store

MAX_BATCH = 1000
MAX_KEY = 128
_CODES: dict[type[DomainError], str] = {
    NotFound: grpc.StatusCode.NOT_FOUND.name,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED.name,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT.name,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION.name,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS.name,
}


def _timeout(errors: ErrorCollector, request: Any) -> int | None:
    if not request.HasField("timeout"):
        return None
    if request.timeout.nanos:
        errors.add("timeout", "must be whole seconds")
    return int(request.timeout.seconds)


def _template_ref(errors: ErrorCollector, request: Any) -> tuple[uuid.UUID | None, str | None]:
    which = request.WhichOneof("template")
    if which == "template_id":
        return parse_uuid(errors, "template_id", request.template_id), None
    if which == "template_code" and request.template_code:
        return None, request.template_code
    errors.add("template", "name the template by template_id or template_code")
    return None, None


def _key(errors: ErrorCollector, key: str) -> str | None:
    if len(key) > MAX_KEY:
        errors.add("idempotency_key", f"must be at most {MAX_KEY} characters")
    return key or None


async def _template(
    conn: asyncpg.Connection, client_id: uuid.UUID, ref: tuple[uuid.UUID | None, str | None]
) -> tuple[template_store.Template, template_store.Permission]:
    found = await template_store.template_with_permission(conn, client_id, *ref)
    if found is None:
        raise NotFound("template not found")
    return found


# A batch resolves its template (and permission) once per tenant, not once per device.
Templates = dict[uuid.UUID, tuple[template_store.Template, template_store.Permission]]


async def _send_one(
    conn: asyncpg.Connection,
    principal: Principal,
    device_id: uuid.UUID,
    ref: tuple[uuid.UUID | None, str | None],
    parameters: dict[str, Any],
    timeout_s: int | None,
    key: str | None,
    confirm: tuple[str, str | None],
    templates: Templates | None = None,
) -> commands_pb2.Command:
    """``confirm``: (what the caller sent, what it must be; None: the device's serial).

    Every refusal (a DomainError) is raised before this writes anything (the insert itself
    stores nothing when it refuses), so a batch needs no savepoint per device."""
    device = await require_device(conn, principal, device_id, DeviceAction.SEND_COMMANDS)
    found = None if templates is None else templates.get(device.client_id)
    if found is None:
        found = await _template(conn, device.client_id, ref)
        if templates is not None:
            templates[device.client_id] = found
    template, permission = found
    await require_sendable(conn, principal, device_id, template, permission)
    require_confirmation(permission, confirm[0], confirm[1] or device.serial, "confirmation")
    created = await create_command(
        conn,
        client_id=device.client_id,
        device_id=device_id,
        template=template,
        parameters=parameters,
        requester=Requester.user(principal.user_id),
        timeout_s=timeout_s,
        idempotency_key=key,
    )
    return command_pb(created.command)


class SendRpcs(CommandRpcs):
    """Send one command, or one to many devices."""

    async def SendCommand(
        self, request: commands_pb2.SendCommandRequest, context: Any
    ) -> commands_pb2.SendCommandResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        ref = _template_ref(errors, request)
        timeout_s = _timeout(errors, request)
        key = _key(errors, request.idempotency_key)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            command = await _send_one(
                conn,
                principal,
                device_id,
                ref,
                dict_of(request.parameters),
                timeout_s,
                key,
                (request.confirmation, None),
            )
        return commands_pb2.SendCommandResponse(command=command)

    async def BatchSendCommand(
        self, request: commands_pb2.BatchSendCommandRequest, context: Any
    ) -> commands_pb2.BatchSendCommandResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_ids = parse_device_ids(errors, "device_ids", request.device_ids, most=MAX_BATCH)
        ref = _template_ref(errors, request)
        timeout_s = _timeout(errors, request)
        key = _key(errors, request.idempotency_key)
        if key is not None and len(key) > MAX_KEY - 37:
            errors.add("idempotency_key", f"must be at most {MAX_KEY - 37} characters in a batch")
        errors.raise_if_any()
        parameters = dict_of(request.parameters)
        confirm = (request.confirmation, f"confirm {len(device_ids)} devices")
        results = []
        templates: Templates = {}
        async with scoped(self.pool, principal) as conn:
            for device_id in device_ids:
                result = commands_pb2.BatchSendCommandResult(device_id=str(device_id))
                try:
                    # No savepoint: a refusal has written nothing (see _send_one).
                    result.command.CopyFrom(
                        await _send_one(
                            conn,
                            principal,
                            device_id,
                            ref,
                            parameters,
                            timeout_s,
                            f"{key}:{device_id}" if key else None,
                            confirm,
                            templates,
                        )
                    )
                    result.code = grpc.StatusCode.OK.name
                except DomainError as exc:
                    result.code = _CODES.get(type(exc), grpc.StatusCode.UNKNOWN.name)
                    result.message = exc.message
                results.append(result)
        return commands_pb2.BatchSendCommandResponse(results=results)
