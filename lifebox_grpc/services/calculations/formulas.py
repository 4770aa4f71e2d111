"""CalculationService: formulas (create, get, list, update, delete, enable)."""

from __future__ import annotations

import uuid
from typing import Any

from lifebox.v1 import calculations_pb2
from lifebox_grpc.auth.permissions import FORMULAS_WRITE
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.calculations.base import CalculationRpcs, require_formula, tenant_of
from lifebox_grpc.services.calculations.mapping import formula_pb
from lifebox_grpc.services.calculations.validation import formula_fields
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
)
from lifebox_grpc.store import alarm_rules as device_checks
from lifebox_grpc.store import calculation_formulas as store

# Formula paths an update may name (the output-only ones and `enabled` are not).
UPDATABLE = frozenset({"name", "description", "expression", "unit", "device_id", "device_type"})
SCOPE_PATHS = ("device_id", "device_type")


async def _check_device(conn: Any, client_id: uuid.UUID, device_id: uuid.UUID | None) -> None:
    """A device-scoped formula names a device of its own tenant."""
    if device_id is not None and not await device_checks.device_exists(conn, client_id, device_id):
        raise NotFound("device not found")


class FormulaRpcs(CalculationRpcs):
    """Formulas."""

    async def CreateFormula(
        self, request: calculations_pb2.CreateFormulaRequest, context: Any
    ) -> calculations_pb2.CreateFormulaResponse:
        principal = require_principal()
        errors = ErrorCollector()
        fields = formula_fields(errors, request.formula)
        if principal.is_staff:
            client_id = parse_uuid(errors, "client_id", request.client_id)
        else:
            client_id = principal.client_id
            if request.client_id and request.client_id != str(client_id):
                errors.add("client_id", "only platform staff name a client")
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            await _check_device(conn, client_id, fields.device_id)
            formula = await store.create_formula(
                conn, client_id, fields, enabled=not request.create_disabled,
                created_by=principal.user_id,
            )  # fmt: skip
        return calculations_pb2.CreateFormulaResponse(formula=formula_pb(formula))

    async def GetFormula(
        self, request: calculations_pb2.GetFormulaRequest, context: Any
    ) -> calculations_pb2.GetFormulaResponse:
        principal = require_principal()
        formula_id = require_uuid("formula_id", request.formula_id)
        async with scoped(self.pool, principal) as conn:
            formula = await require_formula(conn, principal, formula_id)
        return calculations_pb2.GetFormulaResponse(formula=formula_pb(formula))

    async def ListFormulas(
        self, request: calculations_pb2.ListFormulasRequest, context: Any
    ) -> calculations_pb2.ListFormulasResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 2)
        after = None
        if key is not None:
            try:
                after = (key[0], uuid.UUID(key[1]))
            except ValueError:
                errors.add("page_token", "is not a token this API returned")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await store.list_formulas(
                conn, tenant_of(principal), after=after, limit=size + 1
            )
        page = rows[:size]
        token = encode_page_token([page[-1].name, str(page[-1].id)]) if len(rows) > size else ""
        return calculations_pb2.ListFormulasResponse(
            formulas=[formula_pb(f) for f in page], next_page_token=token
        )

    async def UpdateFormula(
        self, request: calculations_pb2.UpdateFormulaRequest, context: Any
    ) -> calculations_pb2.UpdateFormulaResponse:
        principal = require_principal()
        errors = ErrorCollector()
        formula_id = parse_uuid(errors, "formula.id", request.formula.id)
        paths = mask_paths(errors, request.update_mask, UPDATABLE)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            formula = await require_formula(conn, principal, formula_id, lock=True)
            principal.require(FORMULAS_WRITE)
            # The new values over the stored formula, validated as a whole; naming one scope
            # path replaces the whole scope.
            merged = formula_pb(formula)
            if any(path in SCOPE_PATHS for path in paths):
                merged.ClearField("device_id")
                merged.ClearField("device_type")
            for path in paths:
                setattr(merged, path, getattr(request.formula, path))
            fields = formula_fields(errors, merged)
            errors.raise_if_any()
            await _check_device(conn, formula.client_id, fields.device_id)
            updated = await store.update_formula(conn, formula, fields)
        return calculations_pb2.UpdateFormulaResponse(formula=formula_pb(updated))

    async def DeleteFormula(
        self, request: calculations_pb2.DeleteFormulaRequest, context: Any
    ) -> calculations_pb2.DeleteFormulaResponse:
        principal = require_principal()
        formula_id = require_uuid("formula_id", request.formula_id)
        async with scoped(self.pool, principal) as conn:
            formula = await require_formula(conn, principal, formula_id, lock=True)
            principal.require(FORMULAS_WRITE)
            await store.delete_formula(conn, formula)
        return calculations_pb2.DeleteFormulaResponse()

    async def EnableFormula(
        self, request: calculations_pb2.EnableFormulaRequest, context: Any
    ) -> calculations_pb2.EnableFormulaResponse:
        principal = require_principal()
        formula_id = require_uuid("formula_id", request.formula_id)
        async with scoped(self.pool, principal) as conn:
            formula = await require_formula(conn, principal, formula_id, lock=True)
            principal.require(FORMULAS_WRITE)
            updated = await store.set_enabled(conn, formula, request.enabled)
        return calculations_pb2.EnableFormulaResponse(formula=formula_pb(updated))
