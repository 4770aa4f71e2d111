"""The tenant transaction every store call runs in, savepoints inside it, and lone reads
that scope themselves in one statement."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from lifebox_grpc.store import devices as device_store
from lifebox_grpc.store import users as user_store
from lifebox_grpc.store.pool import fetchrow_in_tenant, savepoint, tenant_transaction
from tests.helpers import factories


async def _settings(conn: asyncpg.Connection) -> tuple[str, str]:
    row = await conn.fetchrow(
        "SELECT current_setting('lifebox.client_id', true) AS c, "
        "current_setting('lifebox.staff', true) AS s"
    )
    return row["c"] or "", row["s"] or ""


async def test_settings_hold_inside_and_are_gone_after(
    owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    async with tenant_transaction(app_conn, client):
        assert app_conn.is_in_transaction()
        assert await _settings(app_conn) == (str(client), "off")
    assert not app_conn.is_in_transaction()
    assert await _settings(app_conn) == ("", "")
    async with tenant_transaction(app_conn, None, staff=True):
        assert await _settings(app_conn) == ("", "on")
    assert await _settings(app_conn) == ("", "")


async def test_a_failing_block_rolls_back_everything(owner_conn: asyncpg.Connection) -> None:
    client = await factories.make_client(owner_conn)

    async def rename_then_fail() -> None:
        async with tenant_transaction(owner_conn, client):
            await owner_conn.execute("UPDATE clients SET name = 'renamed' WHERE id = $1", client)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await rename_then_fail()
    assert not owner_conn.is_in_transaction()
    async with tenant_transaction(owner_conn, None, staff=True):
        name = await owner_conn.fetchval("SELECT name FROM clients WHERE id = $1", client)
    assert name != "renamed"


async def test_a_failed_statement_rolls_back_and_the_connection_stays_usable(
    app_conn: asyncpg.Connection,
) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with tenant_transaction(app_conn, None):
            await app_conn.execute("SELECT 1 / 0")
    assert not app_conn.is_in_transaction()
    assert await app_conn.fetchval("SELECT 2") == 2


async def _rename_then_break(conn: asyncpg.Connection, client: uuid.UUID) -> None:
    async with savepoint(conn):
        await conn.execute("UPDATE clients SET name = 'undone' WHERE id = $1", client)
        await conn.execute("UPDATE clients SET slug = '' WHERE id = $1", client)


async def test_a_savepoint_undoes_only_its_own_block(owner_conn: asyncpg.Connection) -> None:
    client = await factories.make_client(owner_conn)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute("UPDATE clients SET name = 'kept' WHERE id = $1", client)
        with pytest.raises(asyncpg.CheckViolationError):
            await _rename_then_break(owner_conn, client)
        async with savepoint(owner_conn):
            await owner_conn.execute("UPDATE clients SET name = 'kept too' WHERE id = $1", client)
    async with tenant_transaction(owner_conn, None, staff=True):
        name = await owner_conn.fetchval("SELECT name FROM clients WHERE id = $1", client)
    assert name == "kept too"


async def test_only_a_uuid_is_accepted_as_the_client(app_conn: asyncpg.Connection) -> None:
    hostile = "x', true); DROP TABLE clients; --"
    with pytest.raises(TypeError):
        async with tenant_transaction(app_conn, hostile):  # type: ignore[arg-type]
            pass
    assert not app_conn.is_in_transaction()


async def test_a_lone_read_scopes_itself_in_one_statement(
    owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    mine = await factories.make_client(owner_conn)
    theirs = await factories.make_client(owner_conn)
    for client in (mine, theirs):
        await factories.make_device(owner_conn, client)
    # No tenant filter of its own: only row-level security, under the settings the
    # statement made before its read, keeps the other tenant's devices out.
    unfiltered = "SELECT array_agg(DISTINCT client_id) AS seen, count(*) AS n FROM devices"
    for _ in range(8):  # past asyncpg's and PostgreSQL's switch to a generic plan
        row = await fetchrow_in_tenant(app_conn, mine, False, unfiltered)
        assert row is not None
        assert row["seen"] == [mine]
    assert not app_conn.is_in_transaction()
    assert await _settings(app_conn) == ("", "")  # gone with the statement
    staff = await fetchrow_in_tenant(app_conn, None, True, unfiltered)
    assert staff is not None
    assert {mine, theirs} <= set(staff["seen"])
    nobody = await fetchrow_in_tenant(app_conn, None, False, unfiltered)
    assert nobody is not None
    assert nobody["n"] == 0  # no tenant, no rows


async def test_a_read_inside_a_transaction_keeps_the_transaction_scope(
    owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    mine = await factories.make_client(owner_conn)
    theirs = await factories.make_client(owner_conn)
    await factories.make_device(owner_conn, theirs)
    async with tenant_transaction(app_conn, mine):
        row = await fetchrow_in_tenant(
            app_conn,
            theirs,
            False,
            "SELECT count(*) AS n FROM devices WHERE client_id = $1",
            theirs,
        )
        assert row is not None
        assert row["n"] == 0
        assert await _settings(app_conn) == (str(mine), "off")


@pytest.mark.parametrize(
    ("setup", "sql", "error"),
    [
        ("", "SELECT 1 / (count(*) - count(*)) AS x FROM devices", asyncpg.DivisionByZeroError),
        ("SET statement_timeout = 200", "SELECT pg_sleep(5) AS x", asyncpg.QueryCanceledError),
    ],
)
async def test_the_settings_end_with_a_read_that_fails(
    owner_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    setup: str,
    sql: str,
    error: type[Exception],
) -> None:
    await factories.make_device(owner_conn, await factories.make_client(owner_conn))
    if setup:
        await app_conn.execute(setup)
    with pytest.raises(error):
        await fetchrow_in_tenant(app_conn, None, True, sql)  # the staff path, then a failure
    await app_conn.execute("RESET statement_timeout")
    assert not app_conn.is_in_transaction()
    assert await _settings(app_conn) == ("", "")
    assert await app_conn.fetchval("SELECT count(*) FROM devices") == 0


async def test_the_three_store_reads_agree_with_a_tenant_transaction(
    owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    mine = await factories.make_client(owner_conn)
    theirs = await factories.make_client(owner_conn)
    my_device, _ = await factories.make_device(owner_conn, mine)
    their_device, _ = await factories.make_device(owner_conn, theirs)
    my_user = await factories.make_user(owner_conn, mine, role="operator")
    their_user = await factories.make_user(owner_conn, theirs)
    mine_only = device_store.DeviceFilter(mine, None)
    any_client = device_store.DeviceFilter(None, None)
    async with tenant_transaction(app_conn, mine):
        device = await device_store.get_device(app_conn, my_device, mine_only)
        user = await user_store.get_user(app_conn, my_user, mine)
        record = await user_store.principal_record(app_conn, my_user, mine)
    assert device is not None
    assert user is not None
    assert record is not None
    assert not app_conn.is_in_transaction()
    assert await device_store.get_device(app_conn, my_device, mine_only) == device
    assert await user_store.get_user(app_conn, my_user, mine) == user
    assert await user_store.principal_record(app_conn, my_user, mine) == record
    assert await device_store.get_device(app_conn, their_device, mine_only) is None
    assert await user_store.get_user(app_conn, their_user, mine) is None
    assert await user_store.principal_record(app_conn, their_user, mine) is None
    # No client and no explicit staff path: no tenant, nothing visible (as in a transaction).
    assert await user_store.get_user(app_conn, their_user, None) is None
    assert await device_store.get_device(app_conn, their_device, any_client) is None
    assert await user_store.principal_record(app_conn, their_user, None) is None
    staff = device_store.DeviceFilter(None, None, staff=True)
    assert await device_store.get_device(app_conn, their_device, staff) is not None
    assert await user_store.get_user(app_conn, their_user, None, staff=True) is not None
