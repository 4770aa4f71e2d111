"""CommandService: templates, grants, sending, reading and cancelling commands, and their
live updates, one module per resource. Validation and mapping only; the SQL is in the stores
(store/commands.py, command_templates.py, command_grants.py); a command is created by
:func:`lifebox_grpc.commands.create.create_command` and published by the dispatcher."""

from __future__ import annotations

from lifebox_grpc.services.commands.commands import CommandReadRpcs
from lifebox_grpc.services.commands.fanout import CommandFanout
from lifebox_grpc.services.commands.grants import GrantRpcs
from lifebox_grpc.services.commands.sending import SendRpcs
from lifebox_grpc.services.commands.stream import StreamRpcs
from lifebox_grpc.services.commands.templates import TemplateRpcs

__all__ = ["CommandFanout", "CommandServicer"]


class CommandServicer(TemplateRpcs, GrantRpcs, SendRpcs, CommandReadRpcs, StreamRpcs):
    """The CommandService handlers."""
