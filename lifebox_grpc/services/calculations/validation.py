"""CalculationService: a Formula message checked into the fields the store writes.

The expression is checked by the native code ingest evaluates it with (the alarm
expressions' check: position, code and message of every problem)."""

from __future__ import annotations

import json
import re

from lifebox.v1 import calculations_pb2
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.alarms.validation import check_cel
from lifebox_grpc.services.common import check_text, parse_uuid
from lifebox_grpc.store.calculation_formulas import FormulaFields

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_DESCRIPTION = 2000
MAX_UNIT = 32
MAX_DEVICE_TYPE = 100


def formula_fields(
    errors: ErrorCollector, formula: calculations_pb2.Formula, prefix: str = "formula"
) -> FormulaFields:
    """The writable fields of ``formula``; every problem a violation under ``prefix``."""
    if not NAME.match(formula.name):
        errors.add(
            f"{prefix}.name",
            "a lowercase letter, then up to 63 lowercase letters, digits or underscores",
        )
    check_text(
        errors, f"{prefix}.description", formula.description,
        max_length=MAX_DESCRIPTION, required=False,
    )  # fmt: skip
    inputs = check_cel(errors, f"{prefix}.expression", formula.expression)
    check_text(errors, f"{prefix}.unit", formula.unit, max_length=MAX_UNIT, required=False)
    device_id = parse_uuid(errors, f"{prefix}.device_id", formula.device_id, required=False)
    if formula.device_type:
        check_text(errors, f"{prefix}.device_type", formula.device_type, max_length=MAX_DEVICE_TYPE)
    if formula.device_id and formula.device_type:
        errors.add(f"{prefix}.device_type", "at most one of device_id and device_type")
    return FormulaFields(
        name=formula.name,
        description=formula.description,
        expression=formula.expression,
        unit=formula.unit or None,
        device_id=device_id,
        device_type=formula.device_type or None,
        inputs=json.dumps(inputs),
    )
