"""Billing factories for tests: a stub, the webhook's URL, plans, and ledger reads."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from lifebox.v1 import billing_pb2, billing_pb2_grpc, common_pb2
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
