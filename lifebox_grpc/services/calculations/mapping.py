"""CalculationService: stored formulas as protobuf messages."""

from __future__ import annotations

import json

from lifebox.v1 import calculations_pb2
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store.calculation_formulas import Formula

SCOPES = {
    "device": calculations_pb2.FORMULA_SCOPE_DEVICE,
    "device_type": calculations_pb2.FORMULA_SCOPE_DEVICE_TYPE,
    "tenant": calculations_pb2.FORMULA_SCOPE_TENANT,
}


def scope_of(formula: Formula) -> str:
    if formula.device_id is not None:
        return "device"
    return "device_type" if formula.device_type is not None else "tenant"


def formula_pb(formula: Formula) -> calculations_pb2.Formula:
    return calculations_pb2.Formula(
        id=str(formula.id),
        client_id=str(formula.client_id),
        name=formula.name,
        description=formula.description,
        expression=formula.expression,
        unit=formula.unit or "",
        device_id=str(formula.device_id) if formula.device_id else "",
        device_type=formula.device_type or "",
        scope=SCOPES[scope_of(formula)],
        enabled=formula.enabled,
        version=formula.version,
        inputs=json.loads(formula.inputs),
        create_time=timestamp(formula.created_at),
        update_time=timestamp(formula.updated_at),
    )
