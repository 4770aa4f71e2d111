"""The billing pass of `lifebox maintain` (under its lease): renewals, postpaid overdue
marking, suspensions past the grace period, restorations of settled clients, and the daily
storage sample. Every step is idempotent: a second pass right after the first changes
nothing. Each subscription and each client is its own transaction on the staff path, so a
pass killed at any point leaves whole steps done or undone, and the next pass finishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from lifebox_grpc.billing import accounts
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store import billing_periods as periods
from lifebox_grpc.store import billing_subscriptions as subs
from lifebox_grpc.store import billing_usage as usage
from lifebox_grpc.store.pool import tenant_transaction

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    renewed: int = 0
    ended: int = 0
    overdue: int = 0
    suspended: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    storage_rows: int = 0

    def __str__(self) -> str:
        return (
            f"billing: {self.renewed} renewed, {self.ended} ended, {self.overdue} overdue, "
            f"{len(self.suspended)} suspended, {len(self.restored)} restored, "
            f"{self.storage_rows} storage samples"
        )


async def billing_pass(
    conn: asyncpg.Connection, *, now: datetime, grace_days: int, due_days: int
) -> PassReport:
    """One pass over every tenant (``conn`` may be the owner: RLS is forced, so the pass
    takes the staff path explicitly)."""
    report = PassReport()
    async with tenant_transaction(conn, None, staff=True):
        due = await subs.due_subscriptions(conn, now)
    for subscription_id in due:
        async with tenant_transaction(conn, None, staff=True):
            done = await accounts.renew(conn, subscription_id, now=now, due_days=due_days)
        if done == "renewed":
            report.renewed += 1
        elif done in ("cancelled", "expired"):
            report.ended += 1
    async with tenant_transaction(conn, None, staff=True):
        await subs.set_actor(conn, None, "postpaid invoice past its due date")
        overdue = await periods.mark_overdue(conn, now)
        report.overdue = len(overdue)
        for period in overdue:
            live = await subs.live_subscription(conn, period.client_id, lock=True)
            if live is not None and live.status == "active":
                await subs.update_subscription(
                    conn, live.id, {"status": "past_due", "past_due_since": period.due_at}
                )
    cutoff = now - timedelta(days=grace_days)
    async with tenant_transaction(conn, None, staff=True):
        late = {
            s.client_id
            for s in await subs.past_due_subscriptions(conn)
            if s.past_due_since is not None and s.past_due_since <= cutoff
        } | set(await periods.overdue_clients(conn, cutoff))
    for client_id in sorted(late):
        async with tenant_transaction(conn, None, staff=True):
            await subs.set_actor(conn, None, f"past due beyond the {grace_days}-day grace period")
            if await ledger.suspend_for_billing(conn, client_id):
                report.suspended.append(str(client_id))
                log.warning("client suspended for billing", extra={"client_id": str(client_id)})
    async with tenant_transaction(conn, None, staff=True):
        held = await conn.fetch(
            "SELECT id FROM clients WHERE status = 'suspended' AND suspension_reason = 'billing'"
        )
    for row in held:
        async with tenant_transaction(conn, None, staff=True):
            await subs.set_actor(conn, None, "settled")
            settled = await accounts.settle(conn, row["id"])
            if settled.restored:
                report.restored.append(str(row["id"]))
    async with tenant_transaction(conn, None, staff=True):
        report.storage_rows = await usage.sample_storage(conn, now.date())
    return report
