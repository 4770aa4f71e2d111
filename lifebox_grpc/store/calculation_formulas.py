"""Calculation formulas (calculation_formulas): the API's CRUD, the formulas ingest evaluates,
and the stored readings TestFormula evaluates against.

Every query names its client; row-level security checks the same on the API's role. The
database bumps ``version`` on every update (0097), so a caller never writes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists, NotFound

COLUMNS = (
    "id, client_id, name, description, expression, unit, device_id, device_type, enabled, "
    "version, inputs::text AS inputs, created_by, created_at, updated_at"
)
WRITABLE = ("name", "description", "expression", "unit", "device_id", "device_type", "inputs")


@dataclass(frozen=True)
class Formula:
    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    description: str
    expression: str
    unit: str | None
    device_id: uuid.UUID | None
    device_type: str | None
    enabled: bool
    version: int
    inputs: str  # JSON array of the fields the expression reads (from the check)
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class FormulaFields:
    """The writable part of a formula, validated by the service; ``inputs`` is the JSON
    array of the fields its expression reads."""

    name: str
    description: str
    expression: str
    unit: str | None
    device_id: uuid.UUID | None
    device_type: str | None
    inputs: str


def fields_of(formula: Formula) -> FormulaFields:
    return FormulaFields(**{name: getattr(formula, name) for name in WRITABLE})


def _formula(row: asyncpg.Record) -> Formula:
    return Formula(**dict(row))


def _values(fields: FormulaFields) -> list[Any]:
    values = asdict(fields)
    return [values[name] for name in WRITABLE]


_NAME_TAKEN = "calculation_formulas_client_id_name_key"


async def create_formula(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    fields: FormulaFields,
    *,
    enabled: bool,
    created_by: uuid.UUID | None,
) -> Formula:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO calculation_formulas
                (client_id, created_by, name, description, expression, unit, device_id,
                 device_type, inputs, enabled)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
            RETURNING {COLUMNS}
            """,
            client_id,
            created_by,
            *_values(fields),
            enabled,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == _NAME_TAKEN:
            raise AlreadyExists(f"a formula named {fields.name!r} exists") from exc
        raise
    assert row is not None
    return _formula(row)


async def get_formula(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    formula_id: uuid.UUID,
    *,
    lock: bool = False,
) -> Formula | None:
    """A formula in scope (``client_id`` None: any tenant's, on the staff path)."""
    row = await conn.fetchrow(
        f"""
        SELECT {COLUMNS} FROM calculation_formulas
        WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)
        {"FOR UPDATE" if lock else ""}
        """,
        formula_id,
        client_id,
    )
    return None if row is None else _formula(row)


async def list_formulas(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    *,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
) -> list[Formula]:
    """Formulas by name then id (keyset paging)."""
    rows = await conn.fetch(
        f"""
        SELECT {COLUMNS} FROM calculation_formulas
        WHERE ($1::uuid IS NULL OR client_id = $1)
          AND ($2::text IS NULL OR (name, id) > ($2, $3))
        ORDER BY name, id
        LIMIT $4
        """,
        client_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_formula(r) for r in rows]


async def update_formula(
    conn: asyncpg.Connection, formula: Formula, fields: FormulaFields
) -> Formula:
    try:
        row = await conn.fetchrow(
            f"""
            UPDATE calculation_formulas
            SET name = $3, description = $4, expression = $5, unit = $6, device_id = $7,
                device_type = $8, inputs = $9::jsonb
            WHERE id = $1 AND client_id = $2
            RETURNING {COLUMNS}
            """,
            formula.id,
            formula.client_id,
            *_values(fields),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == _NAME_TAKEN:
            raise AlreadyExists(f"a formula named {fields.name!r} exists") from exc
        raise
    if row is None:
        raise NotFound("formula not found")
    return _formula(row)


async def set_enabled(conn: asyncpg.Connection, formula: Formula, enabled: bool) -> Formula:
    row = await conn.fetchrow(
        f"UPDATE calculation_formulas SET enabled = $3 WHERE id = $1 AND client_id = $2 "
        f"RETURNING {COLUMNS}",
        formula.id,
        formula.client_id,
        enabled,
    )
    if row is None:
        raise NotFound("formula not found")
    return _formula(row)


async def delete_formula(conn: asyncpg.Connection, formula: Formula) -> None:
    await conn.execute(
        "DELETE FROM calculation_formulas WHERE id = $1 AND client_id = $2",
        formula.id,
        formula.client_id,
    )


@dataclass(frozen=True)
class EnabledFormula:
    """What ingest evaluates: a formula's identity, version, scope, metric and expression."""

    id: uuid.UUID
    version: int
    client_id: uuid.UUID
    device_id: uuid.UUID | None
    device_type: str | None
    name: str
    unit: str | None
    expression: str


async def enabled_formulas(
    conn: asyncpg.Connection, client_ids: Sequence[uuid.UUID]
) -> list[EnabledFormula]:
    """The enabled formulas of these tenants (ingest, as ``lifebox_ingest``), by id."""
    rows = await conn.fetch(
        """
        SELECT id, version, client_id, device_id, device_type, name, unit, expression
        FROM calculation_formulas
        WHERE client_id = ANY($1::uuid[]) AND enabled
        ORDER BY id
        """,
        list(client_ids),
    )
    return [EnabledFormula(**dict(r)) for r in rows]


async def stored_readings(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    fields: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int,
) -> list[asyncpg.Record]:
    """A device's readings in [start, end), oldest first: ``time`` and the named known
    fields (the caller passes only known numeric or boolean column names)."""
    selected = "".join(f', "{name}"' for name in fields)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT time{selected} FROM telemetry_events
        WHERE device_id = $1 AND client_id = $2 AND time >= $3 AND time < $4
        ORDER BY time
        LIMIT $5
        """,
        device_id,
        client_id,
        start,
        end,
        limit,
    )
    return rows
