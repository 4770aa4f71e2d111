"""Metering, defined once: the price in force at the time of use applies (a period is cut at
each price change), the plan's included use comes off first, and storage is sampled daily
from the tenant's rows x the measured average row size."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg

from lifebox_grpc.store import billing_usage as usage
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories


async def test_use_is_priced_at_the_price_in_force_when_it_happened(
    owner_conn: asyncpg.Connection,
) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    middle = start + timedelta(days=10)
    end = start + timedelta(days=20)
    async with tenant_transaction(owner_conn, None, staff=True):
        await usage.create_price(owner_conn, client, "command", Decimal("1.00"), "EGP", start)
        await usage.create_price(owner_conn, client, "command", Decimal("3.00"), "EGP", middle)
        prices = await usage.list_prices(owner_conn, client, "command")
    assert [(p.valid_from, p.valid_to) for p in prices] == [(start, middle), (middle, None)]
    for day in (1, 2, 3, 12, 13):
        command = await factories.make_command(owner_conn, client, device, status="sent")
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE control_commands SET sent_at = $2 WHERE id = $1",
                command,
                start + timedelta(days=day),
            )
    async with tenant_transaction(owner_conn, None, staff=True):
        lines = await usage.meter(
            owner_conn, client, start, end, currency="EGP", included={"command": Decimal(1)}
        )
    (line,) = [ln for ln in lines if ln.item == "command"]
    assert line.quantity == 5
    assert line.included == 1
    # 3 at 1.00 with one included, then 2 at 3.00.
    assert [(p.quantity, p.billable, p.amount) for p in line.pieces] == [
        (Decimal(3), Decimal(2), Decimal("2.00")),
        (Decimal(2), Decimal(2), Decimal("6.00")),
    ]
    assert line.amount == Decimal("8.00")


async def test_storage_is_sampled_once_a_day_and_metered_as_a_mean(
    owner_conn: asyncpg.Connection,
) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    for i in range(3):
        await factories.make_reading(
            owner_conn, client, device, datetime.now(UTC) - timedelta(minutes=i), voltage_l1=1.0
        )
    today = date.today()
    async with tenant_transaction(owner_conn, None, staff=True):
        written = await usage.sample_storage(owner_conn, today)
        assert written > 0
        assert await usage.sample_storage(owner_conn, today) == 0  # once a day
        row = await owner_conn.fetchrow(
            "SELECT row_count, avg_row_bytes FROM storage_samples WHERE client_id = $1 "
            "AND relation = 'telemetry_events' AND day = $2",
            client,
            today,
        )
        assert row is not None
        assert row["row_count"] == 3
        assert row["avg_row_bytes"] > 0
        start = datetime.combine(today, datetime.min.time(), UTC)
        lines = await usage.meter(
            owner_conn, client, start, start + timedelta(days=1), currency="EGP", included={}
        )
    (storage,) = [ln for ln in lines if ln.item == "storage_gb_month"]
    total_bytes = await _sampled_bytes(owner_conn, client, today)
    assert storage.quantity == (total_bytes / Decimal(10**9)).quantize(usage.QUANTUM)


async def _sampled_bytes(conn: asyncpg.Connection, client: object, day: date) -> Decimal:
    async with tenant_transaction(conn, None, staff=True):
        value = await conn.fetchval(
            "SELECT sum(row_count * avg_row_bytes) FROM storage_samples "
            "WHERE client_id = $1 AND day = $2",
            client,
            day,
        )
    return Decimal(value)
