"""VAT: a plan's tax_rate (Egypt's 14 % as "0.14") is booked as its own ledger row after each
prepaid charge (credited back on a prorated credit), and frozen on a postpaid period as
subtotal + tax = total, the invoice booking the total; all in numeric, half up to the cent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import billing_pb2
from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_usage as usage
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import egp, ledger_state, stub
from tests.helpers.grpc import Server, make_staff, make_tenant, violations

P = billing_pb2


def _plan(price: str, rate: str) -> billing_pb2.Plan:
    return P.Plan(
        code=factories.unique("vat").replace(".", "-")[:60].lower(),
        name="VAT plan",
        billing_interval=P.BILLING_INTERVAL_MONTH,
        price=egp(price),
        device_quota=5,
        tax_rate=rate,
    )


def test_vat_rounds_half_up_to_the_cent_both_ways() -> None:
    assert accounts.vat(Decimal("333.33"), Decimal("0.14")) == Decimal("46.67")  # 46.6662
    assert accounts.vat(Decimal("0.25"), Decimal("0.14")) == Decimal("0.04")  # 0.035
    assert accounts.vat(Decimal("-0.25"), Decimal("0.14")) == Decimal("-0.04")
    assert accounts.vat(Decimal("100"), Decimal(0)) == 0


async def test_a_prepaid_fee_and_a_prorated_change_each_book_their_vat_row(
    billing_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    tenant = await make_tenant(billing_server, owner_conn)
    api = stub(billing_server)
    cheap = (
        await api.CreatePlan(P.CreatePlanRequest(plan=_plan("500.00", "0.14")), metadata=staff.md)
    ).plan
    dear = (
        await api.CreatePlan(P.CreatePlanRequest(plan=_plan("800.00", "0.14")), metadata=staff.md)
    ).plan
    assert cheap.tax_rate == "0.1400"
    sub = await api.CreateSubscription(
        P.CreateSubscriptionRequest(client_id=str(tenant.client_id), plan_id=cheap.id),
        metadata=staff.md,
    )
    rows = (
        await api.ListCreditTransactions(
            P.ListCreditTransactionsRequest(client_id=str(tenant.client_id)), metadata=staff.md
        )
    ).credit_transactions
    got = sorted((r.kind, r.amount.amount) for r in rows)
    assert got == [
        (P.CREDIT_TRANSACTION_KIND_SUBSCRIPTION, "-500.0000"),
        (P.CREDIT_TRANSACTION_KIND_TAX, "-70.0000"),
    ]
    tax_row = next(r for r in rows if r.kind == P.CREDIT_TRANSACTION_KIND_TAX)
    fee_row = next(r for r in rows if r.kind == P.CREDIT_TRANSACTION_KIND_SUBSCRIPTION)
    assert tax_row.external_ref == fee_row.external_ref + ":vat"
    changed = await api.ChangeSubscriptionPlan(
        P.ChangeSubscriptionPlanRequest(id=sub.subscription.id, plan_id=dear.id),
        metadata=staff.md,
    )
    delta = Decimal(changed.prorated_amount.amount)
    assert delta > 0
    balance, total, _ = await ledger_state(owner_conn, tenant.client_id)
    assert balance == total == -(Decimal(570) + delta + accounts.vat(delta, Decimal("0.14")))
    # Back down: the credit's VAT is credited too.
    back = await api.ChangeSubscriptionPlan(
        P.ChangeSubscriptionPlanRequest(id=sub.subscription.id, plan_id=cheap.id),
        metadata=staff.md,
    )
    credit = Decimal(back.prorated_amount.amount)
    assert credit < 0
    balance2, total2, _ = await ledger_state(owner_conn, tenant.client_id)
    assert balance2 == total2 == balance - credit - accounts.vat(credit, Decimal("0.14"))


async def test_a_postpaid_invoice_freezes_subtotal_tax_and_total_and_books_the_total(
    billing_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    start = datetime.now(UTC) - timedelta(days=31)
    device, _ = await factories.make_device(owner_conn, client)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE clients SET billing_mode = 'postpaid' WHERE id = $1", client
        )
        await usage.create_price(owner_conn, client, "command", Decimal("1.25"), "EGP", start)
        plan = await plan_store.create_plan(
            owner_conn,
            plan_store.NewPlan(
                factories.unique("vp"), "VP", "month", Decimal(300), "EGP", 5, {}, Decimal("0.14")
            ),
        )
        await accounts.start_subscription(
            owner_conn, client, plan, now=start, trial_days=0, auto_renew=True, actor=None
        )
    for k in range(4):
        command = await factories.make_command(owner_conn, client, device, status="sent")
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE control_commands SET sent_at = $2 WHERE id = $1",
                command,
                start + timedelta(days=k + 1),
            )
    await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=7, due_days=14)
    api = stub(billing_server)
    (period,) = (
        await api.ListPostpaidPeriods(
            P.ListPostpaidPeriodsRequest(client_id=str(client)), metadata=staff.md
        )
    ).periods
    assert period.status == "invoiced"
    assert (period.subtotal.amount, period.tax.amount, period.total.amount) == (
        "305.0000",
        "42.7000",
        "347.7000",
    )
    balance, total, _ = await ledger_state(owner_conn, client)
    assert balance == total == Decimal("-347.70")
    # Voiding it gives all of it back, VAT included.
    await api.VoidPostpaidPeriod(
        P.VoidPostpaidPeriodRequest(id=period.id, reason="credit note"), metadata=staff.md
    )
    assert (await ledger_state(owner_conn, client))[:2] == (0, 0)


@pytest.mark.parametrize("rate", ["1", "0.14.1", "-0.14", "0.12345", "14%"])
async def test_a_bad_tax_rate_is_invalid_argument(
    billing_server: Server, owner_conn: asyncpg.Connection, rate: str
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(billing_server).CreatePlan(
            P.CreatePlanRequest(plan=_plan("10.00", rate)), metadata=staff.md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "plan.tax_rate" in violations(caught.value)


async def test_staff_change_a_plans_tax_rate(
    billing_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    api = stub(billing_server)
    plan = (
        await api.CreatePlan(P.CreatePlanRequest(plan=_plan("10.00", "")), metadata=staff.md)
    ).plan
    assert plan.tax_rate == "0.0000"
    updated = await api.UpdatePlan(
        P.UpdatePlanRequest(
            plan=P.Plan(id=plan.id, tax_rate="0.14"),
            update_mask=field_mask_pb2.FieldMask(paths=["tax_rate"]),
        ),
        metadata=staff.md,
    )
    assert updated.plan.tax_rate == "0.1400"


async def test_renewals_book_their_vat_once_however_often_maintain_runs(
    billing_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    async with tenant_transaction(owner_conn, None, staff=True):
        plan = await plan_store.create_plan(
            owner_conn,
            plan_store.NewPlan(
                factories.unique("vr"),
                "VR",
                "month",
                Decimal("199.99"),
                "EGP",
                5,
                {},
                Decimal("0.14"),
            ),
        )
        await accounts.start_subscription(
            owner_conn,
            client,
            plan,
            now=datetime.now(UTC) - timedelta(days=40),
            trial_days=0,
            auto_renew=True,
            actor=None,
        )
    now = datetime.now(UTC)
    for _ in range(2):
        await billing_pass(owner_conn, now=now, grace_days=7, due_days=14)
    async with tenant_transaction(owner_conn, None, staff=True):
        rows = await owner_conn.fetch(
            "SELECT kind, amount FROM credit_transactions WHERE client_id = $1 ORDER BY booked_seq",
            client,
        )
    fees = [r["amount"] for r in rows if r["kind"] == "subscription"]
    taxes = [r["amount"] for r in rows if r["kind"] == "tax"]
    assert fees == [Decimal("-199.99")] * 2
    assert taxes == [Decimal("-28.00")] * 2  # 27.9986, half up
    balance, total, _ = await ledger_state(owner_conn, client)
    assert balance == total == Decimal("-455.98")
