"""Enforcement: a client past due beyond the grace period is suspended with reason billing
(login refused, the broker refuses its devices, ingest rejects what still arrives) and is
restored when it pays; a staff suspension survives any payment."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest

from lifebox.v1 import billing_pb2, clients_pb2
from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.enforcement import billing_pass
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import egp, ledger_state, stub, webhook_url
from tests.helpers.broker import connect, device_credential, sync_broker
from tests.helpers.fawry_fake import FakeFawry
from tests.helpers.grpc import Account, Server, Tenant, make_staff, make_tenant, reason, sign_in
from tests.helpers.ingest import publisher, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

GRACE = 7


async def _overdue_subscription(conn: asyncpg.Connection, client: uuid.UUID, days_ago: int) -> None:
    """A subscription started ``days_ago`` whose first period the client could not pay."""
    async with tenant_transaction(conn, None, staff=True):
        plan = await plan_store.create_plan(
            conn,
            plan_store.NewPlan(factories.unique("p"), "P", "month", Decimal(400), "EGP", 5, {}),
        )
        await accounts.start_subscription(
            conn,
            client,
            plan,
            now=datetime.now(UTC) - timedelta(days=days_ago),
            trial_days=0,
            auto_renew=True,
            actor=None,
        )


async def _status(conn: asyncpg.Connection, client: uuid.UUID) -> tuple[str, str | None]:
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "SELECT status, suspension_reason FROM clients WHERE id = $1", client
        )
    assert row is not None
    return row["status"], row["suspension_reason"]


async def _pay(
    server: Server, fawry: FakeFawry, staff: Account, client: uuid.UUID, amount: str
) -> None:
    payment = await stub(server).CreateFawryPayment(
        billing_pb2.CreateFawryPaymentRequest(client_id=str(client), amount=egp(amount)),
        metadata=staff.md,
    )
    charge = fawry.pay(payment.payment.merchant_ref_number)
    assert await fawry.notify(webhook_url(server), charge) == 200


async def _login_code(server: Server, tenant: Tenant) -> tuple[grpc.StatusCode, str]:
    try:
        await sign_in(server, tenant.users["viewer"])
    except grpc.aio.AioRpcError as exc:
        return exc.code(), reason(exc)
    return grpc.StatusCode.OK, ""


@pytest.fixture
async def staff(billing_server: Server, owner_conn: asyncpg.Connection) -> Account:
    return await make_staff(billing_server, owner_conn, "admin")


async def test_past_due_beyond_grace_suspends_everywhere_and_payment_restores(
    billing_server: Server,
    fawry: FakeFawry,
    staff: Account,
    database: Database,
    broker: EmbeddedMosquitto,
    owner_conn: asyncpg.Connection,
) -> None:
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    device, serial = await factories.make_device(owner_conn, client)
    _, secret = await device_credential(owner_conn, client, device, broker)
    session = connect(broker.port, serial, secret)
    assert not session.refused
    session.close()

    # Inside the grace period nothing happens; past it, the client is suspended, once.
    await _overdue_subscription(owner_conn, client, days_ago=GRACE - 2)
    first = await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=GRACE, due_days=14)
    assert str(client) not in first.suspended
    later = datetime.now(UTC) + timedelta(days=3)
    report = await billing_pass(owner_conn, now=later, grace_days=GRACE, due_days=14)
    assert str(client) in report.suspended
    again = await billing_pass(owner_conn, now=later, grace_days=GRACE, due_days=14)
    assert str(client) not in again.suspended
    assert await _status(owner_conn, client) == ("suspended", "billing")

    # Login refused; the broker refuses the device; ingest rejects what still arrives.
    assert await _login_code(billing_server, tenant) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR_REASON_CLIENT_SUSPENDED",
    )
    await sync_broker(owner_conn, broker)
    refused = connect(broker.port, serial, secret)
    assert refused.refused
    refused.close()
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(
            [
                (
                    f"lifebox/v1/{serial}/telemetry",
                    json.dumps({"ts": int(time.time() * 1000), "voltage_l1": 1}).encode(),
                )
            ]
        )

        async def rejected() -> bool:
            async with tenant_transaction(owner_conn, None, staff=True):
                return bool(
                    await owner_conn.fetchval(
                        "SELECT count(*) FROM ingest_rejects WHERE serial = $1 "
                        "AND code = 'client_suspended'",
                        serial,
                    )
                )

        await async_wait_until(rejected, 60, "a client_suspended reject")

    # Staff see the suspension and why.
    account = await stub(billing_server).GetBillingAccount(
        billing_pb2.GetBillingAccountRequest(client_id=str(client)), metadata=staff.md
    )
    assert (account.status, account.suspension_reason) == ("suspended", "billing")
    assert "grace period" in account.status_events[0].note

    # Paying what is owed restores it at once (the webhook settles), everywhere.
    await _pay(billing_server, fawry, staff, client, "400.00")
    assert await _status(owner_conn, client) == ("active", None)
    balance, total, _ = await ledger_state(owner_conn, client)
    assert balance == total == 0
    assert (await _login_code(billing_server, tenant))[0] == grpc.StatusCode.OK
    await sync_broker(owner_conn, broker)
    back = connect(broker.port, serial, secret)
    assert not back.refused
    back.close()
    account = await stub(billing_server).GetBillingAccount(
        billing_pb2.GetBillingAccountRequest(client_id=str(client)), metadata=staff.md
    )
    assert [(e.from_status, e.to_status) for e in account.status_events[:2]] == [
        ("suspended", "active"),
        ("active", "suspended"),
    ]
    live = await stub(billing_server).ListSubscriptions(
        billing_pb2.ListSubscriptionsRequest(client_id=str(client)), metadata=staff.md
    )
    assert live.subscriptions[0].status == billing_pb2.SUBSCRIPTION_STATUS_ACTIVE


async def test_a_staff_suspension_survives_a_payment(
    billing_server: Server, fawry: FakeFawry, staff: Account, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(billing_server, owner_conn)
    client = tenant.client_id
    await _overdue_subscription(owner_conn, client, days_ago=GRACE + 1)
    await billing_server.clients.SuspendClient(
        clients_pb2.SuspendClientRequest(id=str(client), reason="fraud review"), metadata=staff.md
    )
    assert await _status(owner_conn, client) == ("suspended", "staff")
    await _pay(billing_server, fawry, staff, client, "1000.00")
    await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=GRACE, due_days=14)
    assert await _status(owner_conn, client) == ("suspended", "staff")
    # Resumed by hand, the client is paid up: the pass leaves it alone.
    await billing_server.clients.ResumeClient(
        clients_pb2.ResumeClientRequest(id=str(client)), metadata=staff.md
    )
    await billing_pass(owner_conn, now=datetime.now(UTC), grace_days=GRACE, due_days=14)
    assert await _status(owner_conn, client) == ("active", None)
