"""A tenant's whole month: a subscription, 40 devices whose readings and commands are
metered at the tenant's prices, a PAYATFAWRY payment notified twice and confirmed once, the
period closed by `lifebox maintain`, and the balance right to the piaster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
from google.protobuf import timestamp_pb2

from lifebox.v1 import billing_pb2
from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_usage as usage
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import egp, ledger_state, stub, webhook_url
from tests.helpers.fawry_fake import FakeFawry
from tests.helpers.grpc import Server, make_tenant

PRICES = {
    "device_month": "12.25",
    "million_readings": "45.50",
    "command": "0.35",
    "storage_gb_month": "2.00",
}


async def test_a_tenants_whole_month_is_metered_charged_and_paid_to_the_piaster(
    billing_server: Server, fawry: FakeFawry, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    api = stub(billing_server)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=31)
    for item, price in PRICES.items():
        async with tenant_transaction(owner_conn, None, staff=True):
            await usage.create_price(
                owner_conn, client, item, Decimal(price), "EGP", start - timedelta(days=1)
            )
    async with tenant_transaction(owner_conn, None, staff=True):
        plan = await plan_store.create_plan(
            owner_conn,
            plan_store.NewPlan(
                factories.unique("month"),
                "Month",
                "month",
                Decimal("750.00"),
                "EGP",
                50,
                {"million_readings": Decimal("0.0001")},  # the first 100 readings
            ),
        )
        sub = await accounts.start_subscription(
            owner_conn, client, plan, now=start, trial_days=0, auto_renew=True, actor=None
        )
    end = sub.current_period_end

    # 40 devices, 25 readings each inside the period; 2 more devices only outside it.
    devices = [await factories.make_device(owner_conn, client) for _ in range(42)]
    rows = [
        (start + timedelta(hours=6 + 17 * j, seconds=i), device, client, float(j))
        for i, (device, _) in enumerate(devices[:40])
        for j in range(25)
    ]
    rows += [(end + timedelta(hours=1), d, client, 1.0) for d, _ in devices[40:]]
    rows += [(start - timedelta(hours=1), d, client, 1.0) for d, _ in devices[40:]]
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.executemany(
            "INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1) "
            "VALUES ($1, $2, $3, $4)",
            rows,
        )
    # 30 commands reached sent in the period; 5 never left pending.
    for k in range(35):
        device = devices[k % 40][0]
        command = await factories.make_command(
            owner_conn, client, device, status="sent" if k < 30 else "pending"
        )
        if k < 30:
            async with tenant_transaction(owner_conn, None, staff=True):
                await owner_conn.execute(
                    "UPDATE control_commands SET sent_at = $2 WHERE id = $1",
                    command,
                    start + timedelta(days=k % 28, hours=3),
                )

    got = await api.GetUsage(
        billing_pb2.GetUsageRequest(
            client_id=str(client),
            start_time=timestamp_pb2.Timestamp(seconds=int(start.timestamp())),
            end_time=timestamp_pb2.Timestamp(seconds=int(end.timestamp())),
        ),
        metadata=tenant.users["client"].md,
    )
    items = {i.item: i for i in got.items}
    assert items["device_month"].quantity == "40"
    assert items["device_month"].amount.amount == "490.00"
    assert Decimal(items["million_readings"].quantity) == Decimal("0.001")
    assert Decimal(items["million_readings"].included_quantity) == Decimal("0.0001")
    assert items["million_readings"].amount.amount == "0.04"  # 0.0009 x 45.50 = 0.04095
    assert items["command"].quantity == "30"
    assert items["command"].amount.amount == "10.50"
    assert got.total.amount == "500.54"

    # The tenant pays 2100.00 at a Fawry outlet; Fawry notifies twice.
    payment = await api.CreateFawryPayment(
        billing_pb2.CreateFawryPaymentRequest(amount=egp("2100.00")),
        metadata=tenant.users["client"].md,
    )
    charge = fawry.pay(payment.payment.merchant_ref_number)
    queries = fawry.status_queries
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    assert fawry.status_queries == queries + 1

    # Month end: usage of the ended period and the next period's fee, once.
    for _ in range(2):
        await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=7, due_days=14)
    balance, total, ledger = await ledger_state(owner_conn, client)
    assert [amount for amount, _, _ in ledger] == [
        Decimal("-750.00"),
        Decimal("2100.00"),
        Decimal("-500.54"),
        Decimal("-750.00"),
    ]
    assert balance == total == Decimal("99.46")
    running = Decimal(0)
    for amount, after, _ in ledger:
        running += amount
        assert after == running
    account = await api.GetBillingAccount(
        billing_pb2.GetBillingAccountRequest(), metadata=tenant.users["client"].md
    )
    assert account.balance.amount == "99.4600"
    subscription = await api.GetSubscription(
        billing_pb2.GetSubscriptionRequest(id=str(sub.id)), metadata=tenant.users["client"].md
    )
    assert subscription.subscription.status == billing_pb2.SUBSCRIPTION_STATUS_ACTIVE
    # Unpaid from its first charge until the payment came, then renewed.
    assert [(e.kind, e.to_status) for e in subscription.events] == [
        ("created", billing_pb2.SUBSCRIPTION_STATUS_ACTIVE),
        ("status", billing_pb2.SUBSCRIPTION_STATUS_PAST_DUE),
        ("status", billing_pb2.SUBSCRIPTION_STATUS_ACTIVE),
        ("renewed", billing_pb2.SUBSCRIPTION_STATUS_ACTIVE),
    ]
