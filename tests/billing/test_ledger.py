"""The ledger is the balance's one source of truth: clients.balance = the sum of completed
rows, each balance_after is the balance right after its row, under any concurrency."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import asyncpg
import pytest

from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.billing import ledger_state
from tests.helpers.services import Database


def _check_invariant(
    balance: Decimal, total: Decimal, rows: list[tuple[Decimal, Decimal, str]]
) -> None:
    assert balance == total
    running = Decimal(0)
    for amount, after, status in rows:
        if status == "completed":
            running += amount
        assert after == running
    assert running == balance


async def _book(conn: asyncpg.Connection, client: uuid.UUID, amount: Decimal, **kw: object) -> None:
    async with tenant_transaction(conn, client):
        await ledger.book(
            conn,
            ledger.Booking(client_id=client, amount=amount, currency="EGP", kind="topup", **kw),  # type: ignore[arg-type]
        )


async def test_fifty_parallel_charges_and_top_ups_lose_no_update(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    rng = random.Random(16)
    amounts = [Decimal(rng.randint(1, 100_000)) / 100 * (1 if i % 2 else -1) for i in range(50)]
    conns = [await asyncpg.connect(database.app_dsn) for _ in range(10)]
    try:

        async def one(i: int, amount: Decimal) -> None:
            conn = conns[i % len(conns)]
            async with tenant_transaction(conn, client):
                await ledger.book(
                    conn,
                    ledger.Booking(
                        client_id=client,
                        amount=amount,
                        currency="EGP",
                        kind="topup" if amount > 0 else "charge",
                    ),
                )

        # Ten connections, five bookings queued on each, all started at once.
        async def lane(k: int) -> None:
            for i in range(k, 50, 10):
                await one(i, amounts[i])

        await asyncio.gather(*(lane(k) for k in range(10)))
    finally:
        for conn in conns:
            await conn.close()
    balance, total, rows = await ledger_state(owner_conn, client)
    assert len(rows) == 50
    assert balance == sum(amounts, Decimal(0))
    _check_invariant(balance, total, rows)


async def test_failed_rows_count_for_nothing_and_carry_the_balance(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    await _book(app_conn, client, Decimal("100.50"))
    await _book(app_conn, client, Decimal("40"), status="failed")
    await _book(app_conn, client, Decimal("0.25"))
    balance, total, rows = await ledger_state(owner_conn, client)
    assert balance == Decimal("100.75")
    assert rows[1] == (Decimal("40"), Decimal("100.50"), "failed")
    _check_invariant(balance, total, rows)


async def test_the_balance_changes_only_through_the_ledger(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    for conn in (app_conn, owner_conn):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only through the ledger"):
            async with tenant_transaction(conn, None, staff=True):
                await conn.execute("UPDATE clients SET balance = 1000 WHERE id = $1", client)


async def test_the_app_role_can_neither_update_nor_delete_ledger_rows(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    await _book(app_conn, client, Decimal("10"))
    for sql in (
        "UPDATE credit_transactions SET amount = 1000 WHERE client_id = $1",
        "DELETE FROM credit_transactions WHERE client_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_conn, client):
                await app_conn.execute(sql, client)


async def test_a_row_in_another_currency_is_refused(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    with pytest.raises(asyncpg.CheckViolationError, match="client's currency"):
        async with tenant_transaction(app_conn, client):
            await ledger.book(
                app_conn,
                ledger.Booking(client_id=client, amount=Decimal(5), currency="USD", kind="topup"),
            )


async def test_a_payment_reference_books_once_even_through_on_conflict(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    await _book(app_conn, client, Decimal("10"), external_ref="fawry-1")
    _, new = await _book_once(app_conn, client, "fawry-1")
    assert not new
    # Even a writer using ON CONFLICT DO NOTHING cannot move the balance a second time.
    with pytest.raises(asyncpg.UniqueViolationError):
        async with tenant_transaction(app_conn, client):
            await app_conn.execute(
                "INSERT INTO credit_transactions (client_id, amount, currency, kind, "
                "external_ref) VALUES ($1, 10, 'EGP', 'topup', 'fawry-1') ON CONFLICT DO NOTHING",
                client,
            )
    balance, total, rows = await ledger_state(owner_conn, client)
    assert balance == Decimal(10)
    _check_invariant(balance, total, rows)


async def _book_once(
    conn: asyncpg.Connection, client: uuid.UUID, ref: str
) -> tuple[ledger.Entry, bool]:
    async with tenant_transaction(conn, client):
        return await ledger.book_once(
            conn,
            ledger.Booking(
                client_id=client, amount=Decimal(10), currency="EGP", kind="topup", external_ref=ref
            ),
        )


async def test_reversals_point_at_their_original_and_never_exceed_it(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    async with tenant_transaction(app_conn, client):
        original = await ledger.book(
            app_conn,
            ledger.Booking(client_id=client, amount=Decimal(100), currency="EGP", kind="topup"),
        )
    for amount in (Decimal(-60), Decimal(-40)):
        async with tenant_transaction(app_conn, client):
            await ledger.book(
                app_conn,
                ledger.Booking(
                    client_id=client,
                    amount=amount,
                    currency="EGP",
                    kind="reversal",
                    reverses_id=original.id,
                ),
            )
    for amount in (Decimal("-0.01"), Decimal(10)):
        with pytest.raises(asyncpg.CheckViolationError):
            async with tenant_transaction(app_conn, client):
                await ledger.book(
                    app_conn,
                    ledger.Booking(
                        client_id=client,
                        amount=amount,
                        currency="EGP",
                        kind="reversal",
                        reverses_id=original.id,
                    ),
                )
    balance, total, rows = await ledger_state(owner_conn, client)
    assert balance == 0
    _check_invariant(balance, total, rows)
