"""CalculationService: TestFormula, a formula evaluated on stored readings, nothing saved.

The same checked expression and the same native evaluation as ingest
(``ingest_native/src/formulas.rs``): a value is a point, or skipped for ingest's reasons
(missing_field, non_finite: division by zero, not_a_number, error)."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox.v1 import calculations_pb2
from lifebox_grpc.alarms.conditions import BOOLEAN_FIELDS, RULE_FIELDS
from lifebox_grpc.auth.permissions import TELEMETRY_READ
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.native import Expression as NativeExpression
from lifebox_grpc.native import ExpressionColumn, evaluate_formula
from lifebox_grpc.services.alarms.validation import check_cel
from lifebox_grpc.services.calculations.base import CalculationRpcs, require_formula
from lifebox_grpc.services.common import parse_uuid, scoped, timestamp
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.store import calculation_formulas as store

DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
MAX_SPAN = timedelta(days=31)


class TestRpcs(CalculationRpcs):
    """The dry run."""

    async def TestFormula(
        self, request: calculations_pb2.TestFormulaRequest, context: Any
    ) -> calculations_pb2.TestFormulaResponse:
        principal = require_principal()
        errors = ErrorCollector()
        formula_id = parse_uuid(errors, "formula_id", request.formula_id, required=False)
        if (formula_id is None) == (not request.expression):
            errors.add("expression", "exactly one of formula_id and expression")
        if request.expression:
            check_cel(errors, "expression", request.expression)
        device_id = parse_uuid(errors, "device_id", request.device_id)
        if not request.HasField("start_time"):
            errors.add("start_time", "required")
        start = request.start_time.ToDatetime(UTC)
        end = (
            request.end_time.ToDatetime(UTC) if request.HasField("end_time") else datetime.now(UTC)
        )
        if request.HasField("start_time") and not start < end:
            errors.add("end_time", "must be after start_time")
        elif end - start > MAX_SPAN:
            errors.add("end_time", "at most 31 days after start_time")
        if not 0 <= request.page_size <= MAX_POINTS:
            errors.add("page_size", f"0 to {MAX_POINTS}")
        errors.raise_if_any()
        limit = request.page_size or DEFAULT_POINTS
        async with scoped(self.pool, principal) as conn:
            source = request.expression
            if formula_id is not None:
                source = (await require_formula(conn, principal, formula_id)).expression
            expression = NativeExpression(source)
            device = await require_device(conn, principal, device_id)
            principal.require(TELEMETRY_READ)
            names = [f for f in expression.fields if f in RULE_FIELDS]
            rows = await store.stored_readings(
                conn, device.client_id, device.id, names, start, end, limit + 1
            )
        truncated = len(rows) > limit
        rows = rows[:limit]
        columns = [
            ExpressionColumn(
                name,
                name in BOOLEAN_FIELDS,
                array(
                    "d", [math.nan if r[name] is None else float(r[name]) for r in rows]
                ).tobytes(),
            )
            for name in names
        ]
        raw, codes = evaluate_formula(expression, columns, len(rows))
        values = array("d")
        values.frombytes(raw)
        points = [
            calculations_pb2.TestedPoint(time=timestamp(row["time"]), value=value)
            for row, value, code in zip(rows, values, codes, strict=True)
            if code is None
        ]
        skipped = Counter(code for code in codes if code is not None)
        return calculations_pb2.TestFormulaResponse(
            points=points, readings_evaluated=len(values), skipped=dict(skipped),
            truncated=truncated,
        )  # fmt: skip
