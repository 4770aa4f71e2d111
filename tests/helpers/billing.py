"""Billing factories for tests: a stub, the webhook's URL, plans, and ledger reads."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from lifebox.v1 import billing_pb2, billing_pb2_grpc, common_pb2
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Account, Server


def stub(server: Server) -> billing_pb2_grpc.BillingServiceStub:
    return billing_pb2_grpc.BillingServiceStub(server.channel)


def webhook_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.running.http_port}/webhooks/fawry"


def egp(amount: str) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EGP", amount=amount)


async def make_plan(
    server: Server,
    staff: Account,
    *,
    price: str = "500.00",
    quota: int = 50,
    included: dict[str, str] | None = None,
) -> billing_pb2.Plan:
    reply = await stub(server).CreatePlan(
        billing_pb2.CreatePlanRequest(
            plan=billing_pb2.Plan(
                code=factories.unique("plan").replace(".", "-")[:60].lower(),
                name="Test plan",
                billing_interval=billing_pb2.BILLING_INTERVAL_MONTH,
                price=egp(price),
                device_quota=quota,
                included_usage=included or {},
            )
        ),
        metadata=staff.md,
    )
    plan: billing_pb2.Plan = reply.plan
    return plan


async def ledger_state(
    conn: asyncpg.Connection, client_id: uuid.UUID
) -> tuple[Decimal, Decimal, list[tuple[Decimal, Decimal, str]]]:
    """(clients.balance, sum of completed rows, [(amount, balance_after, status)] in order)."""
    async with tenant_transaction(conn, None, staff=True):
        balance = await conn.fetchval("SELECT balance FROM clients WHERE id = $1", client_id)
        rows = await conn.fetch(
            "SELECT amount, balance_after, status FROM credit_transactions WHERE client_id = $1 "
            "ORDER BY booked_seq",
            client_id,
        )
    total = sum((r["amount"] for r in rows if r["status"] == "completed"), Decimal(0))
    return balance, total, [(r["amount"], r["balance_after"], r["status"]) for r in rows]


async def make_invoiced_period(
    conn: asyncpg.Connection, client_id: uuid.UUID, total: Decimal = Decimal(0)
) -> uuid.UUID:
    """An invoiced postpaid period of ``client_id`` made directly (open -> closed ->
    invoiced, as the lifecycle trigger allows) with its invoice's ledger charge of
    ``total`` (none for zero): the balance then stays below it, so no settling pays it."""
    async with tenant_transaction(conn, None, staff=True):
        start = await conn.fetchval(
            "SELECT coalesce(max(period_end), '2020-01-01'::timestamptz) FROM postpaid_periods "
            "WHERE client_id = $1",
            client_id,
        )
        period_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO postpaid_periods (client_id, period_start, period_end, currency) "
            "VALUES ($1, $2::timestamptz, $2::timestamptz + interval '1 month', 'EGP') "
            "RETURNING id",
            client_id,
            start,
        )
        await conn.execute(
            "UPDATE postpaid_periods SET status = 'closed', subtotal = $2, total = $2 "
            "WHERE id = $1",
            period_id,
            total,
        )
        await conn.execute(
            "UPDATE postpaid_periods SET status = 'invoiced', due_at = now() + interval '14 days' "
            "WHERE id = $1",
            period_id,
        )
        if total:
            await ledger.book(
                conn,
                ledger.Booking(
                    client_id=client_id,
                    amount=-total,
                    currency="EGP",
                    kind="charge",
                    external_ref=f"period:{period_id}",
                    description="invoice (test)",
                    postpaid_period_id=period_id,
                ),
            )
    return period_id
