"""Subscriptions: only the defined transitions are ever written, each change with its audit
row; plan changes prorate by the days left; renewals in `lifebox maintain` are idempotent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest

from lifebox.v1 import billing_pb2
from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.errors import FailedPrecondition
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_subscriptions as subs
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import egp, ledger_state, make_plan, stub
from tests.helpers.grpc import Server, error_of, make_staff, make_tenant

ALLOWED = {
    ("trialing", "active"),
    ("active", "past_due"),
    ("past_due", "active"),
    ("trialing", "cancelled"),
    ("active", "cancelled"),
    ("past_due", "cancelled"),
    ("active", "expired"),
    ("past_due", "expired"),
}
STATUSES = ("trialing", "active", "past_due", "cancelled", "expired")
# How to reach each status from a new subscription by allowed steps.
PATHS = {
    "trialing": ["trialing"],
    "active": ["active"],
    "past_due": ["active", "past_due"],
    "cancelled": ["active", "cancelled"],
    "expired": ["active", "expired"],
}


async def _plan(conn: asyncpg.Connection, price: str = "100") -> plan_store.Plan:
    async with tenant_transaction(conn, None, staff=True):
        return await plan_store.create_plan(
            conn,
            plan_store.NewPlan(factories.unique("p"), "P", "month", Decimal(price), "EGP", 5, {}),
        )


def _changes(status: str, now: datetime) -> dict[str, object]:
    return {
        "status": status,
        "past_due_since": now if status == "past_due" else None,
    }


async def test_only_the_defined_transitions_are_ever_written(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    plan = await _plan(owner_conn)
    now = datetime.now(UTC)
    seen = set()
    for start in STATUSES:
        for target in STATUSES:
            if start == target:
                continue
            client = await factories.make_client(owner_conn)
            path = PATHS[start]
            async with tenant_transaction(app_conn, client):
                sub = await subs.create_subscription(
                    app_conn,
                    client,
                    plan,
                    status=path[0],
                    start=now,
                    end=now + timedelta(days=30),
                    auto_renew=True,
                )
                for step in path[1:]:
                    sub = await subs.update_subscription(app_conn, sub.id, _changes(step, now))
            if (start, target) in ALLOWED:
                async with tenant_transaction(app_conn, client):
                    await subs.update_subscription(app_conn, sub.id, _changes(target, now))
                seen.add((start, target))
            else:
                with pytest.raises(FailedPrecondition, match="cannot make that change"):
                    async with tenant_transaction(app_conn, client):
                        await subs.update_subscription(app_conn, sub.id, _changes(target, now))
            async with tenant_transaction(app_conn, client):
                events = await subs.list_events(app_conn, sub.id)
            written = path + ([target] if (start, target) in seen else [])
            assert [e.to_status for e in events] == written
            assert events[0].kind == "created"
    assert seen == ALLOWED
    # A subscription is never born past due, cancelled or expired.
    client = await factories.make_client(owner_conn)
    with pytest.raises(asyncpg.CheckViolationError):
        async with tenant_transaction(app_conn, client):
            await subs.create_subscription(
                app_conn,
                client,
                plan,
                status="past_due",
                start=now,
                end=now + timedelta(days=1),
                auto_renew=True,
            )


async def test_staff_subscribe_change_plan_prorated_and_cancel_with_an_audit_trail(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(grpc_server, owner_conn, "admin")
    tenant = await make_tenant(grpc_server, owner_conn)
    api = stub(grpc_server)
    small = await make_plan(grpc_server, staff, price="300.00", quota=2)
    large = await make_plan(grpc_server, staff, price="900.00", quota=20)
    await api.CreateCreditAdjustment(
        billing_pb2.CreateCreditAdjustmentRequest(
            client_id=str(tenant.client_id), amount=egp("1000.00"), description="opening"
        ),
        metadata=staff.md,
    )
    created = await api.CreateSubscription(
        billing_pb2.CreateSubscriptionRequest(
            client_id=str(tenant.client_id), plan_id=small.id, auto_renew=True
        ),
        metadata=staff.md,
    )
    sub = created.subscription
    assert sub.status == billing_pb2.SUBSCRIPTION_STATUS_ACTIVE
    start = sub.current_period_start.ToDatetime(UTC)
    end = sub.current_period_end.ToDatetime(UTC)
    changed = await api.ChangeSubscriptionPlan(
        billing_pb2.ChangeSubscriptionPlanRequest(id=sub.id, plan_id=large.id), metadata=staff.md
    )
    expected = accounts.prorated(Decimal(300), Decimal(900), start, end, datetime.now(UTC))
    assert Decimal(changed.prorated_amount.amount) == expected
    assert expected == Decimal(600)  # changed on day one: every day of the period is left
    assert changed.subscription.device_quota == 20
    # A second live subscription is refused.
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await api.CreateSubscription(
            billing_pb2.CreateSubscriptionRequest(
                client_id=str(tenant.client_id), plan_id=small.id
            ),
            metadata=staff.md,
        )
    assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS
    cancelled = await api.CancelSubscription(
        billing_pb2.CancelSubscriptionRequest(id=sub.id, at_period_end=True, reason="moving"),
        metadata=staff.md,
    )
    assert cancelled.subscription.cancel_at_period_end
    got = await api.GetSubscription(
        billing_pb2.GetSubscriptionRequest(id=sub.id), metadata=tenant.users["client"].md
    )
    assert [e.kind for e in got.events] == ["created", "plan_changed", "cancel_scheduled"]
    assert all(e.actor_user_id == str(staff.user_id) for e in got.events)
    assert got.events[2].reason == "moving"
    balance, total, _ = await ledger_state(owner_conn, tenant.client_id)
    assert balance == total == Decimal(1000 - 300 - 600)
    # Tenants read their subscription, never change it.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await api.CancelSubscription(
            billing_pb2.CancelSubscriptionRequest(id=sub.id), metadata=tenant.users["client"].md
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_proration_counts_whole_days_left() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = datetime(2026, 3, 31, tzinfo=UTC)  # 30 days
    now = datetime(2026, 3, 21, 12, tzinfo=UTC)  # 9.5 days left: 10 count
    assert accounts.prorated(Decimal(300), Decimal(900), start, end, now) == Decimal(200)
    assert accounts.prorated(Decimal(900), Decimal(300), start, end, now) == Decimal(-200)
    assert accounts.prorated(Decimal(100), Decimal(101), start, end, now) == Decimal("0.33")


async def _stale_subscription(
    conn: asyncpg.Connection, client: uuid.UUID, plan: plan_store.Plan, days_ago: int
) -> subs.Subscription:
    async with tenant_transaction(conn, None, staff=True):
        return await accounts.start_subscription(
            conn,
            client,
            plan,
            now=datetime.now(UTC) - timedelta(days=days_ago),
            trial_days=0,
            auto_renew=True,
            actor=None,
        )


async def test_renewals_in_maintain_are_idempotent(
    owner_conn: asyncpg.Connection,
) -> None:
    plan = await _plan(owner_conn, "100")
    client = await factories.make_client(owner_conn)
    sub = await _stale_subscription(owner_conn, client, plan, days_ago=75)  # two periods behind
    now = datetime.now(UTC)
    first = await billing_pass(owner_conn, now=now, grace_days=7, due_days=14)
    assert first.renewed >= 1
    _, _, rows = await ledger_state(owner_conn, client)
    async with tenant_transaction(owner_conn, None, staff=True):
        renewed = await subs.get_subscription(owner_conn, sub.id, None)
        events = await subs.list_events(owner_conn, sub.id)
    assert renewed is not None
    assert renewed.current_period_end > now
    assert [r[0] for r in rows] == [Decimal(-100)] * 3  # the first period and two renewals
    assert renewed.status == "past_due"
    second = await billing_pass(owner_conn, now=now, grace_days=7, due_days=14)
    assert (second.renewed, second.ended, second.suspended, second.restored) == (0, 0, [], [])
    _, _, rows_again = await ledger_state(owner_conn, client)
    async with tenant_transaction(owner_conn, None, staff=True):
        events_again = await subs.list_events(owner_conn, sub.id)
    assert rows_again == rows
    assert len(events_again) == len(events)


async def test_a_cancel_at_period_end_and_a_plan_without_renewal_end_in_maintain(
    owner_conn: asyncpg.Connection,
) -> None:
    plan = await _plan(owner_conn, "0")
    ending = await factories.make_client(owner_conn)
    lapsing = await factories.make_client(owner_conn)
    a = await _stale_subscription(owner_conn, ending, plan, days_ago=40)
    b = await _stale_subscription(owner_conn, lapsing, plan, days_ago=40)
    async with tenant_transaction(owner_conn, None, staff=True):
        await subs.update_subscription(owner_conn, a.id, {"cancel_at_period_end": True})
        await subs.update_subscription(owner_conn, b.id, {"auto_renew": False})
    await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=7, due_days=14)
    async with tenant_transaction(owner_conn, None, staff=True):
        assert (await subs.get_subscription(owner_conn, a.id, None)).status == "cancelled"  # type: ignore[union-attr]
        assert (await subs.get_subscription(owner_conn, b.id, None)).status == "expired"  # type: ignore[union-attr]


async def test_quota_refuses_a_device_past_the_plan_with_quota_failure(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    from lifebox.v1 import devices_pb2, devices_pb2_grpc

    staff = await make_staff(grpc_server, owner_conn, "admin")
    tenant = await make_tenant(grpc_server, owner_conn)
    plan = await make_plan(grpc_server, staff, price="0.00", quota=2)
    await stub(grpc_server).CreateSubscription(
        billing_pb2.CreateSubscriptionRequest(client_id=str(tenant.client_id), plan_id=plan.id),
        metadata=staff.md,
    )
    devices = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    md = tenant.users["client"].md

    def new(i: int) -> devices_pb2.Device:
        return devices_pb2.Device(serial=factories.unique("Q").upper()[:20] + str(i), name="d")

    await devices.CreateDevice(devices_pb2.CreateDeviceRequest(device=new(1)), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as batch:
        await devices.BatchCreateDevices(
            devices_pb2.BatchCreateDevicesRequest(devices=[new(2), new(3)]), metadata=md
        )
    code, details = error_of(batch.value)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await devices.CreateDevice(devices_pb2.CreateDeviceRequest(device=new(4)), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as one:
        await devices.CreateDevice(devices_pb2.CreateDeviceRequest(device=new(5)), metadata=md)
    code, details = error_of(one.value)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    violation = details["QuotaFailure"].violations[0]
    assert violation.subject == "billing:device_quota"
    assert "allows 2 devices" in violation.description or "allows 2" in one.value.details()


async def test_the_ledger_pages_newest_first_with_opaque_tokens(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    staff = await make_staff(grpc_server, owner_conn, "admin")
    tenant = await make_tenant(grpc_server, owner_conn)
    api = stub(grpc_server)
    for amount in ("1.00", "2.00", "3.00"):
        await api.CreateCreditAdjustment(
            billing_pb2.CreateCreditAdjustmentRequest(
                client_id=str(tenant.client_id), amount=egp(amount), description="x"
            ),
            metadata=staff.md,
        )
    seen, token = [], ""
    while True:
        page = await api.ListCreditTransactions(
            billing_pb2.ListCreditTransactionsRequest(page_size=1, page_token=token),
            metadata=tenant.users["client"].md,
        )
        seen += [t.amount.amount for t in page.credit_transactions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["3.0000", "2.0000", "1.0000"]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.ListCreditTransactions(
            billing_pb2.ListCreditTransactionsRequest(page_token="forged"),
            metadata=tenant.users["client"].md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
