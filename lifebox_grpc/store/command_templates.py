"""Command templates and command permissions: the API's SQL.

Platform templates (client_id NULL) are readable by every tenant (row-level security's
tenant_or_global_read policy); a tenant's own templates only by it, and only those are written
here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists


@dataclass(frozen=True)
class Template:
    """A command template as stored."""

    id: uuid.UUID
    client_id: uuid.UUID | None
    code: str
    name: str
    description: str
    command_permission: str
    parameters_schema: dict[str, Any]
    default_parameters: dict[str, Any]
    timeout_s: int
    max_retries: int
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Permission:
    """A command permission (the kind of command a user is granted)."""

    code: str
    name: str
    description: str
    category: str
    risk_level: str
    requires_confirmation: bool
    allowed_roles: tuple[str, ...] | None


_COLUMNS = (
    "t.id, t.client_id, t.code, t.name, t.description, t.command_permission, "
    "t.parameters_schema::text AS parameters_schema, "
    "t.default_parameters::text AS default_parameters, t.timeout_s, t.max_retries, t.enabled, "
    "t.created_at, t.updated_at"
)


def _template(row: asyncpg.Record) -> Template:
    return Template(
        row["id"],
        row["client_id"],
        row["code"],
        row["name"],
        row["description"],
        row["command_permission"],
        json.loads(row["parameters_schema"]),
        json.loads(row["default_parameters"]),
        row["timeout_s"],
        row["max_retries"],
        row["enabled"],
        row["created_at"],
        row["updated_at"],
    )


# $1: the tenant whose own templates are visible besides the platform's (NULL: platform only).
_VISIBLE = "(t.client_id IS NULL OR t.client_id = $1)"


async def get_template(
    conn: asyncpg.Connection, template_id: uuid.UUID, client_id: uuid.UUID | None
) -> Template | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM command_templates t WHERE t.id = $2 AND {_VISIBLE}",
        client_id,
        template_id,
    )
    return _template(row) if row else None


async def template_by_code(
    conn: asyncpg.Connection, code: str, client_id: uuid.UUID | None
) -> Template | None:
    """The tenant's own template of ``code`` first, else the platform's."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM command_templates t WHERE t.code = $2 AND {_VISIBLE} "
        "ORDER BY t.client_id IS NULL LIMIT 1",
        client_id,
        code,
    )
    return _template(row) if row else None


# A template (by id, or by code: the tenant's own first) with its command permission, for
# SendCommand: one round trip instead of two.
_WITH_PERMISSION = f"""
SELECT {_COLUMNS}, p.code AS p_code, p.name AS p_name, p.description AS p_description,
       p.category AS p_category, p.risk_level AS p_risk_level,
       p.requires_confirmation AS p_requires_confirmation, p.allowed_roles AS p_allowed_roles
FROM command_templates t JOIN command_permissions p ON p.code = t.command_permission
WHERE {_VISIBLE} AND (t.id = $2 OR ($2::uuid IS NULL AND t.code = $3))
ORDER BY t.client_id IS NULL LIMIT 1
"""


async def template_with_permission(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    template_id: uuid.UUID | None,
    code: str | None,
) -> tuple[Template, Permission] | None:
    """The template named by id, else by code (the tenant's own of that code first, else
    the platform's), and its command permission."""
    row = await conn.fetchrow(_WITH_PERMISSION, client_id, template_id, code)
    if row is None:
        return None
    roles = row["p_allowed_roles"]
    permission = Permission(
        row["p_code"],
        row["p_name"],
        row["p_description"],
        row["p_category"],
        row["p_risk_level"],
        row["p_requires_confirmation"],
        None if roles is None else tuple(roles),
    )
    return _template(row), permission


async def list_templates(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    *,
    show_disabled: bool,
    after: tuple[str, str] | None,
    limit: int,
) -> list[Template]:
    """By code; the tenant's own before the platform's of the same code. The key is
    (code, owner rank) with owner rank '0' for the tenant's, '1' for the platform's."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM command_templates t
        WHERE {_VISIBLE} AND ($2 OR t.enabled)
          AND ($3::text IS NULL OR (t.code, (t.client_id IS NULL)::int::text) > ($3, $4))
        ORDER BY t.code, t.client_id IS NULL
        LIMIT $5
        """,
        client_id,
        show_disabled,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_template(r) for r in rows]


@dataclass(frozen=True)
class NewTemplate:
    client_id: uuid.UUID
    code: str
    name: str
    description: str
    command_permission: str
    parameters_schema: dict[str, Any]
    default_parameters: dict[str, Any]
    timeout_s: int
    max_retries: int
    enabled: bool


async def create_template(conn: asyncpg.Connection, new: NewTemplate) -> Template:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO command_templates AS t (client_id, code, name, description,
                command_permission, parameters_schema, default_parameters, timeout_s,
                max_retries, enabled)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10)
            RETURNING {_COLUMNS}
            """,
            new.client_id,
            new.code,
            new.name,
            new.description,
            new.command_permission,
            json.dumps(new.parameters_schema),
            json.dumps(new.default_parameters),
            new.timeout_s,
            new.max_retries,
            new.enabled,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(f"this client already has a template with code {new.code!r}") from exc
    return _template(row)


_UPDATABLE = {
    "name": "name",
    "description": "description",
    "command_permission": "command_permission",
    "parameters_schema": "parameters_schema",
    "default_parameters": "default_parameters",
    "timeout_s": "timeout_s",
    "max_retries": "max_retries",
    "enabled": "enabled",
}


async def update_template(
    conn: asyncpg.Connection, template_id: uuid.UUID, client_id: uuid.UUID, values: dict[str, Any]
) -> Template | None:
    """Set ``values`` (column → value) on the tenant's own template; None when not theirs."""
    sets: list[str] = []
    args: list[Any] = [template_id, client_id]
    for column, value in values.items():
        name = _UPDATABLE[column]
        if name in ("parameters_schema", "default_parameters"):
            args.append(json.dumps(value))
            sets.append(f"{name} = ${len(args)}::jsonb")
        else:
            args.append(value)
            sets.append(f"{name} = ${len(args)}")
    row = await conn.fetchrow(
        f"UPDATE command_templates t SET {', '.join(sets)} WHERE t.id = $1 AND t.client_id = $2 "
        f"RETURNING {_COLUMNS}",
        *args,
    )
    return _template(row) if row else None


async def lock_template(
    conn: asyncpg.Connection, template_id: uuid.UUID, client_id: uuid.UUID | None
) -> Template | None:
    """A visible template, held for update when it is the tenant's own."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM command_templates t WHERE t.id = $2 AND {_VISIBLE} FOR UPDATE",
        client_id,
        template_id,
    )
    return _template(row) if row else None


def _permission(row: asyncpg.Record) -> Permission:
    roles = row["allowed_roles"]
    return Permission(
        row["code"],
        row["name"],
        row["description"],
        row["category"],
        row["risk_level"],
        row["requires_confirmation"],
        None if roles is None else tuple(roles),
    )


_PERMISSION_COLUMNS = (
    "code, name, description, category, risk_level, requires_confirmation, allowed_roles"
)


async def list_permissions(conn: asyncpg.Connection) -> list[Permission]:
    rows = await conn.fetch(f"SELECT {_PERMISSION_COLUMNS} FROM command_permissions ORDER BY code")
    return [_permission(r) for r in rows]


async def get_permission(conn: asyncpg.Connection, code: str) -> Permission | None:
    row = await conn.fetchrow(
        f"SELECT {_PERMISSION_COLUMNS} FROM command_permissions WHERE code = $1", code
    )
    return _permission(row) if row else None


async def permission_codes(conn: asyncpg.Connection, codes: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT code FROM command_permissions WHERE code = ANY($1::text[])", list(codes)
    )
    return {r["code"] for r in rows}


async def get_template_any(conn: asyncpg.Connection, template_id: uuid.UUID) -> Template | None:
    """Any tenant's template or a platform one (the staff path)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM command_templates t WHERE t.id = $1", template_id
    )
    return _template(row) if row else None
