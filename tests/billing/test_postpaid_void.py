"""Staff void an invoiced or overdue postpaid period: the status moves within the allowed
transitions only, the change is audited with who and why in the same transaction, and the
invoice's ledger charge is reversed by a row pointing at it, which settles the client (a
billing suspension for that debt is lifted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest

from lifebox.v1 import billing_pb2
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.billing import ledger_state, make_invoiced_period, stub
from tests.helpers.grpc import Server, make_staff, make_tenant

P = billing_pb2


async def test_voiding_an_overdue_period_reverses_its_charge_audits_it_and_restores_the_client(
    billing_server: Server, owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    period_id = await make_invoiced_period(owner_conn, client, Decimal("342.00"))
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE clients SET billing_mode = 'postpaid' WHERE id = $1", client
        )
    api = stub(billing_server)
    # A tenant may not void its own invoice.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await api.VoidPostpaidPeriod(
            P.VoidPostpaidPeriodRequest(id=str(period_id), reason="mine"),
            metadata=tenant.users["client"].md,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    now = datetime.now(UTC)
    await billing_pass(owner_conn, now=now + timedelta(days=15), grace_days=7, due_days=14)
    report = await billing_pass(owner_conn, now=now + timedelta(days=23), grace_days=7, due_days=14)
    assert str(client) in report.suspended
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await api.VoidPostpaidPeriod(
            P.VoidPostpaidPeriodRequest(id=str(period_id)), metadata=staff.md
        )
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await api.VoidPostpaidPeriod(
        P.VoidPostpaidPeriodRequest(id=str(period_id), reason="billed in error"),
        metadata=staff.md,
    )
    assert reply.period.status == "void"
    trail = [(e.from_status, e.to_status) for e in reply.period.events]
    assert trail == [
        ("", "open"),
        ("open", "closed"),
        ("closed", "invoiced"),
        ("invoiced", "overdue"),
        ("overdue", "void"),
    ]
    last = reply.period.events[-1]
    assert (last.actor_user_id, last.reason) == (str(staff.user_id), "billed in error")
    # The ledger: the invoice's charge is reversed by a row pointing at it.
    row = reply.credit_transaction
    assert row.kind == P.CREDIT_TRANSACTION_KIND_REVERSAL
    assert row.amount.amount == "342.0000"
    async with tenant_transaction(owner_conn, None, staff=True):
        charge_id = await owner_conn.fetchval(
            "SELECT id FROM credit_transactions WHERE external_ref = $1",
            f"period:{period_id}",
        )
    assert row.reverses_id == str(charge_id)
    balance, total, _ = await ledger_state(owner_conn, client)
    assert balance == total == 0
    account = await api.GetBillingAccount(
        P.GetBillingAccountRequest(client_id=str(client)), metadata=staff.md
    )
    assert (account.status, account.suspension_reason) == ("active", "")
    # Only invoiced or overdue periods are voided; void is final.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await api.VoidPostpaidPeriod(
            P.VoidPostpaidPeriodRequest(id=str(period_id), reason="twice"), metadata=staff.md
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # ... and the database refuses it whoever asks.
    with pytest.raises(asyncpg.CheckViolationError):
        async with tenant_transaction(app_conn, client):
            await app_conn.execute(
                "UPDATE postpaid_periods SET status = 'invoiced' WHERE id = $1", period_id
            )
    # A maintenance pass after it changes nothing.
    await billing_pass(owner_conn, now=now + timedelta(days=24), grace_days=7, due_days=14)
    assert (await ledger_state(owner_conn, client))[:2] == (0, 0)


async def test_a_paid_period_cannot_be_voided(
    billing_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    tenant = await make_tenant(billing_server, owner_conn)
    period_id = await make_invoiced_period(owner_conn, tenant.client_id)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE postpaid_periods SET status = 'paid' WHERE id = $1", period_id
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(billing_server).VoidPostpaidPeriod(
            P.VoidPostpaidPeriodRequest(id=str(period_id), reason="late"), metadata=staff.md
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    periods = await stub(billing_server).ListPostpaidPeriods(
        P.ListPostpaidPeriodsRequest(client_id=str(tenant.client_id)), metadata=staff.md
    )
    assert [p.status for p in periods.periods] == ["paid"]
