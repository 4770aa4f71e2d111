"""Postpaid periods (closed with frozen lines, invoiced, overdue past the due date, paid) and
payments in another currency, converted at the rate in force and recorded with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from lifebox.v1 import billing_pb2, common_pb2
from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_usage as usage
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import egp, ledger_state, stub, webhook_url
from tests.helpers.fawry_fake import FakeFawry
from tests.helpers.grpc import Server, make_staff, make_tenant


async def test_a_postpaid_period_is_frozen_invoiced_overdue_and_paid(
    billing_server: Server, app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
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
            plan_store.NewPlan(factories.unique("pp"), "PP", "month", Decimal(300), "EGP", 5, {}),
        )
        sub = await accounts.start_subscription(
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
    now = datetime.now(UTC)
    await billing_pass(owner_conn, now=now, grace_days=7, due_days=14)
    api = stub(billing_server)
    periods = await api.ListPostpaidPeriods(
        billing_pb2.ListPostpaidPeriodsRequest(), metadata=tenant.users["client"].md
    )
    (period,) = periods.periods
    assert period.status == "invoiced"
    assert period.total.amount == "305.0000"
    lines = {ln.item: ln.amount.amount for ln in period.lines}
    assert lines["subscription"] == "300.0000"
    assert lines["command"] == "5.0000"
    balance, total, _ = await ledger_state(owner_conn, client)
    assert balance == total == Decimal(-305)
    # Frozen: totals cannot change, lines cannot be edited.
    with pytest.raises(asyncpg.CheckViolationError, match="frozen"):
        async with tenant_transaction(app_conn, client):
            await app_conn.execute(
                "UPDATE postpaid_periods SET total = 1 WHERE client_id = $1", client
            )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_conn, client):
            await app_conn.execute(
                "UPDATE postpaid_period_lines SET amount = 0 WHERE client_id = $1", client
            )
    # Past the due date: overdue and past due; past the grace period: suspended.
    await billing_pass(owner_conn, now=now + timedelta(days=15), grace_days=7, due_days=14)
    periods = await api.ListPostpaidPeriods(
        billing_pb2.ListPostpaidPeriodsRequest(), metadata=tenant.users["client"].md
    )
    assert periods.periods[0].status == "overdue"
    report = await billing_pass(owner_conn, now=now + timedelta(days=22), grace_days=7, due_days=14)
    assert str(client) in report.suspended
    # Staff book the payment received by transfer: paid, active, restored.
    await api.CreateCreditAdjustment(
        billing_pb2.CreateCreditAdjustmentRequest(
            client_id=str(client), amount=egp("305.00"), description="bank transfer INV"
        ),
        metadata=staff.md,
    )
    periods = await api.ListPostpaidPeriods(
        billing_pb2.ListPostpaidPeriodsRequest(client_id=str(client)), metadata=staff.md
    )
    assert periods.periods[0].status == "paid"
    account = await api.GetBillingAccount(
        billing_pb2.GetBillingAccountRequest(client_id=str(client)), metadata=staff.md
    )
    assert (account.status, account.suspension_reason) == ("active", "")
    got = await api.GetSubscription(
        billing_pb2.GetSubscriptionRequest(id=str(sub.id)), metadata=staff.md
    )
    assert got.subscription.status == billing_pb2.SUBSCRIPTION_STATUS_ACTIVE


async def test_a_payment_in_another_currency_books_at_the_rate_in_force_and_records_it(
    billing_server: Server, fawry: FakeFawry, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(billing_server, owner_conn, "admin")
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    # XTS, ISO 4217's code for testing: rates are global, so no other test moves this pair.
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute("UPDATE clients SET currency = 'XTS' WHERE id = $1", client)
    api = stub(billing_server)
    source = factories.unique("cbe")
    now = datetime.now(UTC)
    for rate, days in (("40", 10), ("50", 1)):
        r = billing_pb2.ExchangeRate(
            base_currency="XTS", quote_currency="EGP", rate=rate, source=source
        )
        r.as_of.FromDatetime(now - timedelta(days=days))
        await api.CreateExchangeRate(
            billing_pb2.CreateExchangeRateRequest(rate=r), metadata=staff.md
        )
    payment = await api.CreateFawryPayment(
        billing_pb2.CreateFawryPaymentRequest(amount=egp("500.00")),
        metadata=tenant.users["client"].md,
    )
    charge = fawry.pay(payment.payment.merchant_ref_number)
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    rows = await api.ListCreditTransactions(
        billing_pb2.ListCreditTransactionsRequest(), metadata=tenant.users["client"].md
    )
    (row,) = rows.credit_transactions
    assert row.amount == common_pb2.Money(currency_code="XTS", amount="10.0000")
    assert row.original_amount == common_pb2.Money(currency_code="EGP", amount="500.0000")
    assert Decimal(row.exchange_rate) == Decimal("0.02")
    assert row.exchange_rate_id
    adjusted = await api.CreateCreditAdjustment(
        billing_pb2.CreateCreditAdjustmentRequest(
            client_id=str(client), amount=egp("-25.00"), description="fee"
        ),
        metadata=staff.md,
    )
    assert adjusted.credit_transaction.amount.amount == "-0.5000"
    balance, total, _ = await ledger_state(owner_conn, client)
    assert balance == total == Decimal("9.50")
