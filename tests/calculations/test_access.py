"""CalculationService access: the two-tenant matrix and the role matrix over every method.

Client A's administrator naming anything of client B gets NOT_FOUND and changes nothing;
operators and viewers hold no formulas permission (PERMISSION_DENIED on every method);
client administrators and staff use every method.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from lifebox.v1 import calculations_pb2 as C
from lifebox.v1 import calculations_pb2_grpc
from lifebox_grpc.services.registry import method_names
from lifebox_grpc.store.pool import tenant_transaction
from tests.calculations.test_ingest_points import make_formula
from tests.helpers import factories
from tests.helpers.grpc import Account, Server, Tenant, make_staff, make_tenant

pytestmark = pytest.mark.timeout(120)
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
_SERVICE = "/lifebox.v1.CalculationService/"


@dataclass
class World:
    tenant: Tenant
    device: uuid.UUID
    formula: uuid.UUID


async def make_world(server: Server, conn: asyncpg.Connection) -> World:
    tenant = await make_tenant(server, conn)
    device, _ = await factories.make_device(conn, tenant.client_id)
    await factories.make_reading(conn, tenant.client_id, device, temperature_c=41.0)
    formula = await make_formula(conn, tenant.client_id, "doubled", "temperature_c * 2")
    return World(tenant, device, formula)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    try:
        return OK, await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), None


def _create(s: Any, who: Account, w: World) -> Awaitable[tuple[grpc.StatusCode, Any]]:
    request = C.CreateFormulaRequest(
        formula=C.Formula(name="new_one", expression="temperature_c + 1", device_id=str(w.device))
    )
    if who.client_id is None:  # staff name the tenant
        request.client_id = str(w.tenant.client_id)
    return code_of(s.CreateFormula(request, metadata=who.md))


Case = Callable[
    [calculations_pb2_grpc.CalculationServiceStub, Account, World],
    Awaitable[tuple[grpc.StatusCode, Any]],
]
CASES: dict[str, Case] = {
    "CreateFormula": _create,
    "GetFormula": lambda s, who, w: code_of(
        s.GetFormula(C.GetFormulaRequest(formula_id=str(w.formula)), metadata=who.md)
    ),
    "ListFormulas": lambda s, who, w: code_of(
        s.ListFormulas(C.ListFormulasRequest(), metadata=who.md)
    ),
    "UpdateFormula": lambda s, who, w: code_of(
        s.UpdateFormula(
            C.UpdateFormulaRequest(
                formula=C.Formula(id=str(w.formula), expression="temperature_c * 3"),
                update_mask=field_mask_pb2.FieldMask(paths=["expression"]),
            ),
            metadata=who.md,
        )
    ),
    "DeleteFormula": lambda s, who, w: code_of(
        s.DeleteFormula(C.DeleteFormulaRequest(formula_id=str(w.formula)), metadata=who.md)
    ),
    "EnableFormula": lambda s, who, w: code_of(
        s.EnableFormula(C.EnableFormulaRequest(formula_id=str(w.formula)), metadata=who.md)
    ),
    "TestFormula": lambda s, who, w: code_of(
        s.TestFormula(
            C.TestFormulaRequest(
                formula_id=str(w.formula), device_id=str(w.device),
                start_time=_ts(datetime.now(UTC) - timedelta(hours=1)),
            ),
            metadata=who.md,
        )
    ),
}  # fmt: skip

# What each role gets on its own tenant's formulas.
ROLES = {
    "viewer": dict.fromkeys(CASES, DENIED),
    "operator": dict.fromkeys(CASES, DENIED),
    "client": dict.fromkeys(CASES, OK),
    "admin": dict.fromkeys(CASES, OK),
}


def test_the_matrices_cover_every_method_of_the_service() -> None:
    ours = {m.removeprefix(_SERVICE) for m in method_names() if m.startswith(_SERVICE)}
    assert ours == set(CASES)
    for expected in ROLES.values():
        assert ours == set(expected)


@pytest.mark.parametrize("method", sorted(CASES))
async def test_client_a_naming_client_b_gets_not_found_and_no_data(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    a = await make_world(grpc_server, owner_conn)
    b = await make_world(grpc_server, owner_conn)
    s = calculations_pb2_grpc.CalculationServiceStub(grpc_server.channel)
    code, reply = await CASES[method](s, a.tenant.users["client"], b)
    if method == "ListFormulas":  # names nothing of B: A's formulas only
        assert code == OK
        assert [f.id for f in reply.formulas] == [str(a.formula)]
    else:
        assert code == NOT_FOUND, method
    async with tenant_transaction(owner_conn, b.tenant.client_id):
        row = await owner_conn.fetchrow(
            "SELECT expression, version, enabled FROM calculation_formulas WHERE id = $1",
            b.formula,
        )
        created = await owner_conn.fetchval(
            "SELECT count(*) FROM calculation_formulas WHERE client_id = $1", b.tenant.client_id
        )
    assert row is not None
    assert (row["expression"], row["version"], row["enabled"]) == ("temperature_c * 2", 1, True)
    assert created == 1


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("method", sorted(CASES))
async def test_each_role_gets_what_its_permissions_allow(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str, role: str
) -> None:
    w = await make_world(grpc_server, owner_conn)
    who = (
        await make_staff(grpc_server, owner_conn, role) if role == "admin" else w.tenant.users[role]
    )
    s = calculations_pb2_grpc.CalculationServiceStub(grpc_server.channel)
    code, _ = await CASES[method](s, who, w)
    assert code == ROLES[role][method], (role, method)
