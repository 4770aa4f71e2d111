"""The database enforces the command lifecycle, whoever writes: only defined transitions,
each with its command_executions row in the same transaction; the outbox job lives exactly
while its command is pending or sent."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories


async def _command(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    client = await factories.make_client(conn)
    device, _ = await factories.make_device(conn, client)
    return client, await factories.make_command(conn, client, device, code="ping")


async def _move(
    conn: asyncpg.Connection, client: uuid.UUID, command: uuid.UUID, old: str, new: str, *,
    audit: bool = True,
) -> None:  # fmt: skip
    async with tenant_transaction(conn, client) as tx:
        await tx.execute("UPDATE control_commands SET status = $2 WHERE id = $1", command, new)
        if audit:
            await tx.execute(
                "INSERT INTO command_executions (client_id, command_id, from_status, to_status, "
                "actor_kind) VALUES ($1, $2, $3, $4, 'system')",
                client,
                command,
                old,
                new,
            )


async def _status(conn: asyncpg.Connection, client: uuid.UUID, command: uuid.UUID) -> str:
    async with tenant_transaction(conn, client) as tx:
        status: str = await tx.fetchval(
            "SELECT status FROM control_commands WHERE id = $1", command
        )
    return status


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (["sent", "completed"], "pending"),  # a final command never moves again
        (["cancelled"], "sent"),
        (["sent"], "cancelled"),  # published: no cancel
        (["sent", "delivered"], "sent"),  # never backwards
        (["expired"], "completed"),
    ],
)
async def test_a_transition_outside_the_lifecycle_is_refused(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, path: list[str], refused: str
) -> None:
    client, command = await _command(owner_conn)
    old = "pending"
    for step in path:
        await _move(app_conn, client, command, old, step)
        old = step
    with pytest.raises(asyncpg.CheckViolationError, match="not a defined transition"):
        await _move(app_conn, client, command, old, refused)
    assert await _status(app_conn, client, command) == old


async def test_a_status_change_without_its_trail_row_is_refused_at_commit(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client, command = await _command(owner_conn)
    with pytest.raises(asyncpg.CheckViolationError, match="no command_executions row"):
        await _move(app_conn, client, command, "pending", "sent", audit=False)
    assert await _status(app_conn, client, command) == "pending"
    # A trail row of another transition does not count either.
    with pytest.raises(asyncpg.CheckViolationError, match="no command_executions row"):
        await _sent_with_wrong_trail(app_conn, client, command)


async def _sent_with_wrong_trail(
    conn: asyncpg.Connection, client: uuid.UUID, command: uuid.UUID
) -> None:
    async with tenant_transaction(conn, client) as tx:
        await tx.execute("UPDATE control_commands SET status = 'sent' WHERE id = $1", command)
        await tx.execute(
            "INSERT INTO command_executions (client_id, command_id, from_status, to_status, "
            "actor_kind) VALUES ($1, $2, 'pending', 'cancelled', 'system')",
            client,
            command,
        )


async def test_a_command_is_born_pending(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    template = await factories.template_id(owner_conn, "ping")
    with pytest.raises(asyncpg.CheckViolationError, match="starts pending"):
        async with tenant_transaction(app_conn, client) as tx:
            await tx.execute(
                "INSERT INTO control_commands (client_id, device_id, template_id, command_type, "
                "status, expires_at) VALUES ($1, $2, $3, 'ping', 'completed', now() + "
                "interval '1 hour')",
                client,
                device,
                template,
            )


async def test_the_outbox_job_goes_when_its_command_is_delivered_or_final(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client, command = await _command(owner_conn)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "INSERT INTO command_outbox (command_id, client_id, device_id) "
            "SELECT id, client_id, device_id FROM control_commands WHERE id = $1",
            command,
        )

    async def jobs() -> int:
        async with tenant_transaction(app_conn, client) as tx:
            count: int = await tx.fetchval(
                "SELECT count(*) FROM command_outbox WHERE command_id = $1", command
            )
        return count

    await _move(app_conn, client, command, "pending", "sent")
    assert await jobs() == 1  # sent: may still be republished
    await _move(app_conn, client, command, "sent", "delivered")
    assert await jobs() == 0
