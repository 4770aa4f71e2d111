"""CommandService: read, list and cancel commands; their trail."""

from __future__ import annotations

from typing import Any

from lifebox.v1 import commands_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition
from lifebox_grpc.services.commands.access import command_scope, require_command
from lifebox_grpc.services.commands.base import CommandRpcs
from lifebox_grpc.services.commands.mapping import STATUS_FROM_PB, command_pb, execution_pb
from lifebox_grpc.services.common import page_size, parse_uuid, require_uuid, scoped
from lifebox_grpc.services.device_access import require_actions, require_device
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import commands as command_store


class CommandReadRpcs(CommandRpcs):
    """Get, list, cancel; list executions."""

    async def GetCommand(
        self, request: commands_pb2.GetCommandRequest, context: Any
    ) -> commands_pb2.GetCommandResponse:
        principal = require_principal()
        command_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            command = await require_command(conn, principal, command_id)
        return commands_pb2.GetCommandResponse(command=command_pb(command))

    async def ListCommands(
        self, request: commands_pb2.ListCommandsRequest, context: Any
    ) -> commands_pb2.ListCommandsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id, required=False)
        template_id = parse_uuid(errors, "template_id", request.template_id, required=False)
        statuses = []
        for i, status in enumerate(request.statuses):
            if status not in STATUS_FROM_PB:
                errors.add(f"statuses[{i}]", "is not a command status")
            else:
                statuses.append(STATUS_FROM_PB[status])
        start = (
            request.start_time.ToDatetime(tzinfo=_utc()) if request.HasField("start_time") else None
        )
        end = request.end_time.ToDatetime(tzinfo=_utc()) if request.HasField("end_time") else None
        if start and end and end <= start:
            errors.add("end_time", "must be after start_time")
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        client_id, device_ids = command_scope(principal)
        query = command_store.CommandQuery(device_id, tuple(statuses), template_id, start, end)
        async with scoped(self.pool, principal) as conn:
            if device_id is not None:
                await require_device(conn, principal, device_id)
            rows = await command_store.list_commands(
                conn, client_id, device_ids, query, after, size + 1
            )
        page, token = time_id_page(rows, size, lambda c: c.issued_at)
        return commands_pb2.ListCommandsResponse(
            commands=[command_pb(c) for c in page], next_page_token=token
        )

    async def CancelCommand(
        self, request: commands_pb2.CancelCommandRequest, context: Any
    ) -> commands_pb2.CancelCommandResponse:
        principal = require_principal()
        command_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            # The lock waits for a dispatcher publishing it right now: then it is sent.
            command = await require_command(conn, principal, command_id, lock=True)
            await require_actions(conn, principal, [command.device_id], DeviceAction.SEND_COMMANDS)
            moved = await command_store.move_command(
                conn,
                command_id,
                ["pending"],
                "cancelled",
                command_store.Actor("user", principal.user_id, {"reason": "cancelled"}),
                error="cancelled",
            )
        if moved is None:
            raise FailedPrecondition(
                f"the command is {command.status}: only a pending command can be cancelled "
                "(a published message cannot be recalled)",
                metadata={"status": command.status},
            )
        return commands_pb2.CancelCommandResponse(command=command_pb(moved))

    async def ListCommandExecutions(
        self, request: commands_pb2.ListCommandExecutionsRequest, context: Any
    ) -> commands_pb2.ListCommandExecutionsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        command_id = parse_uuid(errors, "command_id", request.command_id)
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_command(conn, principal, command_id)
            rows = await command_store.list_executions(conn, command_id, after, size + 1)
        page, token = time_id_page(rows, size, lambda e: e.at)
        return commands_pb2.ListCommandExecutionsResponse(
            executions=[execution_pb(e) for e in page], next_page_token=token
        )


def _utc() -> Any:
    from datetime import UTC

    return UTC
