"""CommandService: command templates (the platform's and a tenant's own) and permissions."""

from __future__ import annotations

import re
import uuid
from typing import Any

from lifebox.v1 import commands_pb2
from lifebox_grpc.auth.permissions import COMMANDS_TEMPLATES_WRITE
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.commands.create import MAX_TIMEOUT_S, MIN_TIMEOUT_S
from lifebox_grpc.commands.parameters import check_schema, validate_parameters
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.commands.base import CommandRpcs
from lifebox_grpc.services.commands.mapping import dict_of, permission_pb, template_pb
from lifebox_grpc.services.common import (
    check_text,
    decode_page_token,
    encode_page_token,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
)
from lifebox_grpc.store import command_templates as template_store

CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
MAX_RETRIES = 10
UPDATABLE = (
    "name",
    "description",
    "command_permission",
    "parameters_schema",
    "default_parameters",
    "timeout",
    "max_retries",
    "enabled",
)


def _tenant(principal: Principal, errors: ErrorCollector, requested: str) -> uuid.UUID | None:
    """The client whose own templates the caller acts on: its own; staff name one."""
    if principal.is_staff:
        return parse_uuid(errors, "client_id", requested, required=False)  # type: ignore[no-any-return]
    return principal.client_id


def _check_fields(
    errors: ErrorCollector, t: commands_pb2.CommandTemplate, paths: set[str]
) -> dict[str, Any]:
    """Validate the named fields of ``t``; their column values."""
    values: dict[str, Any] = {}
    if "name" in paths:
        check_text(errors, "template.name", t.name, max_length=200)
        values["name"] = t.name
    if "description" in paths:
        check_text(errors, "template.description", t.description, max_length=2000, required=False)
        values["description"] = t.description
    if "command_permission" in paths:
        if not t.command_permission:
            errors.add("template.command_permission", "required")
        values["command_permission"] = t.command_permission
    if "parameters_schema" in paths:
        schema = dict_of(t.parameters_schema)
        for path, why in check_schema("template.parameters_schema", schema):
            errors.add(path, why)
        values["parameters_schema"] = schema
    if "default_parameters" in paths:
        values["default_parameters"] = dict_of(t.default_parameters)
    if "timeout" in paths:
        seconds = t.timeout.seconds
        if t.timeout.nanos or not MIN_TIMEOUT_S <= seconds <= MAX_TIMEOUT_S:
            errors.add("template.timeout", "must be whole seconds, 1 second to 7 days")
        values["timeout_s"] = seconds
    if "max_retries" in paths:
        if not 0 <= t.max_retries <= MAX_RETRIES:
            errors.add("template.max_retries", f"must be 0 to {MAX_RETRIES}")
        values["max_retries"] = t.max_retries
    if "enabled" in paths:
        values["enabled"] = t.enabled
    return values


def _check_defaults(errors: ErrorCollector, schema: Any, defaults: dict[str, Any]) -> None:
    if isinstance(schema, dict) and not any(
        v.field.startswith("template.parameters_schema") for v in errors.violations
    ):
        for path, why in validate_parameters("template.default_parameters", schema, defaults):
            errors.add(path, why)


class TemplateRpcs(CommandRpcs):
    """List, get, create and update templates; list command permissions."""

    async def ListCommandTemplates(
        self, request: commands_pb2.ListCommandTemplatesRequest, context: Any
    ) -> commands_pb2.ListCommandTemplatesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = _tenant(principal, errors, request.client_id)
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 2)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await template_store.list_templates(
                conn,
                client_id,
                show_disabled=request.show_disabled,
                after=(key[0], key[1]) if key else None,
                limit=size + 1,
            )
        page = rows[:size]
        token = ""
        if len(rows) > size:
            last = page[-1]
            token = encode_page_token([last.code, "1" if last.client_id is None else "0"])
        return commands_pb2.ListCommandTemplatesResponse(
            templates=[template_pb(t) for t in page], next_page_token=token
        )

    async def GetCommandTemplate(
        self, request: commands_pb2.GetCommandTemplateRequest, context: Any
    ) -> commands_pb2.GetCommandTemplateResponse:
        principal = require_principal()
        template_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            template = await template_store.get_template(
                conn, template_id, None if principal.is_staff else principal.client_id
            )
            if template is None and principal.is_staff:
                template = await _any_template(conn, template_id)
        if template is None:
            raise NotFound("template not found")
        return commands_pb2.GetCommandTemplateResponse(template=template_pb(template))

    async def CreateCommandTemplate(
        self, request: commands_pb2.CreateCommandTemplateRequest, context: Any
    ) -> commands_pb2.CreateCommandTemplateResponse:
        principal = require_principal()
        t = request.template
        errors = ErrorCollector()
        client_id = _tenant(principal, errors, t.client_id)
        if principal.is_staff and client_id is None and not errors.violations:
            errors.add("template.client_id", "staff name the client the template is for")
        if not CODE.match(t.code):
            errors.add("template.code", "must match [a-z][a-z0-9_]{1,63}")
        paths = {"name", "description", "command_permission", "parameters_schema",
                 "default_parameters", "max_retries"}  # fmt: skip
        if t.HasField("timeout"):
            paths.add("timeout")
        values = _check_fields(errors, t, paths)
        _check_defaults(errors, values.get("parameters_schema"), values["default_parameters"])
        async with scoped(self.pool, principal) as conn:
            if values["command_permission"] and not await template_store.permission_codes(
                conn, [values["command_permission"]]
            ):
                errors.add("template.command_permission", "is not a command permission")
            errors.raise_if_any()
            assert client_id is not None
            template = await template_store.create_template(
                conn,
                template_store.NewTemplate(
                    client_id=client_id,
                    code=t.code,
                    name=values["name"],
                    description=values["description"],
                    command_permission=values["command_permission"],
                    parameters_schema=values["parameters_schema"],
                    default_parameters=values["default_parameters"],
                    timeout_s=values.get("timeout_s", 60),
                    max_retries=values["max_retries"],
                    enabled=True,
                ),
            )
        return commands_pb2.CreateCommandTemplateResponse(template=template_pb(template))

    async def UpdateCommandTemplate(
        self, request: commands_pb2.UpdateCommandTemplateRequest, context: Any
    ) -> commands_pb2.UpdateCommandTemplateResponse:
        principal = require_principal()
        errors = ErrorCollector()
        template_id = parse_uuid(errors, "template.id", request.template.id)
        paths = set(mask_paths(errors, request.update_mask, UPDATABLE))
        values = _check_fields(errors, request.template, paths)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            current = await template_store.lock_template(
                conn, template_id, None if principal.is_staff else principal.client_id
            )
            if current is None and principal.is_staff:
                current = await _any_template(conn, template_id)
            if current is None:
                raise NotFound("template not found")
            principal.require(COMMANDS_TEMPLATES_WRITE)
            if current.client_id is None:
                errors.add("template.id", "platform templates are changed by seeding, not the API")
            schema = values.get("parameters_schema", current.parameters_schema)
            defaults = values.get("default_parameters", current.default_parameters)
            if "parameters_schema" in values or "default_parameters" in values:
                _check_defaults(errors, schema, defaults)
            code = values.get("command_permission")
            if code and not await template_store.permission_codes(conn, [code]):
                errors.add("template.command_permission", "is not a command permission")
            errors.raise_if_any()
            assert current.client_id is not None
            updated = await template_store.update_template(
                conn, template_id, current.client_id, values
            )
        assert updated is not None
        return commands_pb2.UpdateCommandTemplateResponse(template=template_pb(updated))

    async def ListCommandPermissions(
        self, request: commands_pb2.ListCommandPermissionsRequest, context: Any
    ) -> commands_pb2.ListCommandPermissionsResponse:
        principal = require_principal()
        async with scoped(self.pool, principal) as conn:
            permissions = await template_store.list_permissions(conn)
        return commands_pb2.ListCommandPermissionsResponse(
            permissions=[permission_pb(p) for p in permissions]
        )


async def _any_template(conn: Any, template_id: uuid.UUID) -> template_store.Template | None:
    """Staff see every tenant's templates."""
    return await template_store.get_template_any(conn, template_id)
