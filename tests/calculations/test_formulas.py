"""CalculationService: each RPC's happy path and bad input, and TestFormula's dry run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from lifebox.v1 import calculations_pb2 as C
from lifebox.v1 import calculations_pb2_grpc
from tests.helpers import factories
from tests.helpers.grpc import Server, error_of, make_tenant, violations

pytestmark = pytest.mark.timeout(120)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def stub(server: Server) -> calculations_pb2_grpc.CalculationServiceStub:
    return calculations_pb2_grpc.CalculationServiceStub(server.channel)


async def test_a_formula_is_created_listed_updated_enabled_and_deleted(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    md = tenant.users["client"].md
    s = stub(grpc_server)
    created = (
        await s.CreateFormula(
            C.CreateFormulaRequest(
                formula=C.Formula(
                    name="power_kw", expression="voltage_l1 * current_l1 / 1000", unit="kW"
                )
            ),
            metadata=md,
        )
    ).formula
    assert (created.version, created.enabled, created.scope) == (1, True, C.FORMULA_SCOPE_TENANT)
    assert list(created.inputs) == ["current_l1", "voltage_l1"]
    second = await s.CreateFormula(
        C.CreateFormulaRequest(
            formula=C.Formula(name="a_first", expression="temperature_c", device_id=str(device)),
            create_disabled=True,
        ),
        metadata=md,
    )
    assert second.formula.scope == C.FORMULA_SCOPE_DEVICE
    assert not second.formula.enabled
    page = await s.ListFormulas(C.ListFormulasRequest(page_size=1), metadata=md)
    rest = await s.ListFormulas(C.ListFormulasRequest(page_token=page.next_page_token), metadata=md)
    assert [f.name for f in [*page.formulas, *rest.formulas]] == ["a_first", "power_kw"]
    assert rest.next_page_token == ""
    updated = (
        await s.UpdateFormula(
            C.UpdateFormulaRequest(
                formula=C.Formula(id=created.id, expression="voltage_l1 * current_l1", unit="W",
                                  device_type="meter"),
                update_mask=field_mask_pb2.FieldMask(paths=["expression", "unit", "device_type"]),
            ),
            metadata=md,
        )
    ).formula  # fmt: skip
    assert (updated.expression, updated.unit, updated.version) == (
        "voltage_l1 * current_l1",
        "W",
        2,
    )
    assert updated.scope == C.FORMULA_SCOPE_DEVICE_TYPE
    disabled = await s.EnableFormula(
        C.EnableFormulaRequest(formula_id=created.id, enabled=False), metadata=md
    )
    assert (disabled.formula.enabled, disabled.formula.version) == (False, 3)
    got = await s.GetFormula(C.GetFormulaRequest(formula_id=created.id), metadata=md)
    assert got.formula == disabled.formula
    await s.DeleteFormula(C.DeleteFormulaRequest(formula_id=created.id), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await s.GetFormula(C.GetFormulaRequest(formula_id=created.id), metadata=md)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_input_names_every_field_and_the_expression_position(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    md = tenant.users["client"].md
    s = stub(grpc_server)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await s.CreateFormula(
            C.CreateFormulaRequest(
                formula=C.Formula(
                    name="Bad Name", expression="voltage_l1 * size(x)", unit="u" * 33,
                    device_id="not-a-uuid", device_type="meter",
                )
            ),
            metadata=md,
        )  # fmt: skip
    code, _ = error_of(bad.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(bad.value)
    assert set(found) == {
        "formula.name", "formula.expression", "formula.unit", "formula.device_id",
        "formula.device_type",
    }  # fmt: skip
    assert "at characters 13-18" in found["formula.expression"]
    assert "function_not_allowed" in found["formula.expression"]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await s.CreateFormula(
            C.CreateFormulaRequest(formula=C.Formula(name="x", expression="status * 2")),
            metadata=md,
        )
    assert "unknown field 'status'" in violations(unknown.value)["formula.expression"]
    await s.CreateFormula(
        C.CreateFormulaRequest(formula=C.Formula(name="dup", expression="temperature_c")),
        metadata=md,
    )
    with pytest.raises(grpc.aio.AioRpcError) as dup:
        await s.CreateFormula(
            C.CreateFormulaRequest(formula=C.Formula(name="dup", expression="temperature_c")),
            metadata=md,
        )
    assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as mask:
        await s.UpdateFormula(
            C.UpdateFormulaRequest(
                formula=C.Formula(id=str(factories.uuid.uuid4())),
                update_mask=field_mask_pb2.FieldMask(paths=["version"]),
            ),
            metadata=md,
        )
    assert "update_mask" in violations(mask.value)


async def test_test_formula_evaluates_stored_readings_and_counts_what_it_skips(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    await factories.make_reading(owner_conn, tenant.client_id, device, base,
                                 active_power_w=5.0, apparent_power_va=10.0)  # fmt: skip
    await factories.make_reading(owner_conn, tenant.client_id, device, base + timedelta(seconds=1),
                                 active_power_w=5.0, apparent_power_va=0.0)  # fmt: skip
    await factories.make_reading(owner_conn, tenant.client_id, device, base + timedelta(seconds=2),
                                 active_power_w=5.0)  # fmt: skip
    s = stub(grpc_server)
    reply = await s.TestFormula(
        C.TestFormulaRequest(
            expression="active_power_w / apparent_power_va",
            device_id=str(device),
            start_time=_ts(base - timedelta(seconds=1)),
        ),
        metadata=tenant.users["client"].md,
    )
    assert [(p.time.ToDatetime(UTC), p.value) for p in reply.points] == [(base, 0.5)]
    assert dict(reply.skipped) == {"non_finite": 1, "missing_field": 1}
    assert (reply.readings_evaluated, reply.truncated) == (3, False)
    boolean = await s.TestFormula(
        C.TestFormulaRequest(
            expression="active_power_w > 1",
            device_id=str(device),
            start_time=_ts(base - timedelta(seconds=1)),
        ),
        metadata=tenant.users["client"].md,
    )
    assert (list(boolean.points), dict(boolean.skipped)) == ([], {"not_a_number": 3})
    async with owner_conn.transaction():
        saved = await owner_conn.fetchval(
            "SELECT count(*) FROM device_data_points WHERE device_id = $1", device
        )
    assert saved == 0
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await s.TestFormula(
            C.TestFormulaRequest(expression="1 +", device_id=str(device)),
            metadata=tenant.users["client"].md,
        )
    assert {"expression", "start_time"} <= set(violations(bad.value))
