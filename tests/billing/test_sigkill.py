"""Billing survives SIGKILL at any point: a renewal killed before its COMMIT leaves no charge,
no period change and no audit row; the next pass books it once. A real `lifebox maintain
--once` killed part-way through many renewals, then run again, books every period exactly
once and keeps the ledger's invariant."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from subprocess import DEVNULL, PIPE

import asyncpg

from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_subscriptions as subs
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import ledger_state
from tests.helpers.services import Database

ROOT = Path(__file__).resolve().parents[2]

# Renews one subscription, prints "written", and waits on stdin before COMMIT.
CHILD = """
import asyncio, sys, uuid
from datetime import UTC, datetime
import asyncpg
from lifebox_grpc.billing import accounts
from lifebox_grpc.store.pool import tenant_transaction

async def main(dsn, sub):
    conn = await asyncpg.connect(dsn)
    async with tenant_transaction(conn, None, staff=True):
        done = await accounts.renew(conn, uuid.UUID(sub), now=datetime.now(UTC), due_days=14)
        print("written", done, flush=True)
        sys.stdin.readline()

asyncio.run(main(*sys.argv[1:]))
"""


async def _due(conn: asyncpg.Connection, count: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``count`` clients each with a subscription two periods behind."""
    async with tenant_transaction(conn, None, staff=True):
        plan = await plan_store.create_plan(
            conn,
            plan_store.NewPlan(factories.unique("k"), "K", "month", Decimal("10"), "EGP", 5, {}),
        )
    out = []
    for _ in range(count):
        client = await factories.make_client(conn)
        async with tenant_transaction(conn, None, staff=True):
            sub = await accounts.start_subscription(
                conn,
                client,
                plan,
                now=datetime.now(UTC) - timedelta(days=70),
                trial_days=0,
                auto_renew=True,
                actor=None,
            )
        out.append((client, sub.id))
    return out


async def _trail(conn: asyncpg.Connection, sub: uuid.UUID) -> int:
    async with tenant_transaction(conn, None, staff=True):
        return len(await subs.list_events(conn, sub))


async def test_a_renewal_killed_before_commit_leaves_nothing_and_is_booked_once_later(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    ((client, sub),) = await _due(owner_conn, 1)
    before = await ledger_state(owner_conn, client)
    trail = await _trail(owner_conn, sub)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        database.owner_dsn,
        str(sub),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.decode().startswith("written renewed")
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 20)
    finally:
        if child.returncode is None:
            child.kill()
    assert await ledger_state(owner_conn, client) == before
    assert await _trail(owner_conn, sub) == trail
    await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=7, due_days=14)
    balance, total, rows = await ledger_state(owner_conn, client)
    assert [r[0] for r in rows] == [Decimal(-10)] * 3
    assert balance == total == Decimal(-30)


async def test_maintain_killed_part_way_then_rerun_books_every_period_exactly_once(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    due = await _due(owner_conn, 60)
    env = {
        **os.environ,
        "LIFEBOX_DATABASE_URL": database.app_dsn,
        "LIFEBOX_OWNER_DATABASE_URL": database.owner_dsn,
        "LIFEBOX_INGEST_DATABASE_URL": database.ingest_dsn,
        "LIFEBOX_HOME": tempfile.mkdtemp(prefix="lifebox-billing-kill-"),
    }
    maintain = (sys.executable, "-m", "lifebox_grpc.cli", "maintain", "--once")
    killed = 0
    for delay in (0.4, 0.7, 1.0, 1.3):
        proc = await asyncio.create_subprocess_exec(
            *maintain, env=env, cwd=ROOT, stdout=DEVNULL, stderr=DEVNULL
        )
        await asyncio.sleep(delay)
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            proc.send_signal(signal.SIGKILL)
        killed += await asyncio.wait_for(proc.wait(), 20) == -signal.SIGKILL
    assert killed  # at least one run died part-way
    done = await asyncio.create_subprocess_exec(
        *maintain, env=env, cwd=ROOT, stdout=DEVNULL, stderr=PIPE
    )
    _, err = await asyncio.wait_for(done.communicate(), 300)
    assert done.returncode == 0, err.decode()[-2000:]
    for client, sub in due:
        balance, total, rows = await ledger_state(owner_conn, client)
        assert [r[0] for r in rows] == [Decimal(-10)] * 3, client
        assert balance == total == Decimal(-30)
        async with tenant_transaction(owner_conn, None, staff=True):
            renewed = await subs.get_subscription(owner_conn, sub, None)
            kinds = [e.kind for e in await subs.list_events(owner_conn, sub)]
        assert renewed is not None
        assert renewed.current_period_end > datetime.now(UTC)
        assert kinds.count("renewed") == 2
