"""A credential change and its history row are one transaction (issue 13): a process killed
with SIGKILL after writing both, before COMMIT, leaves neither; one killed after COMMIT leaves
both. Run for create, rotate and revoke in a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from lifebox_grpc.broker import passwords
from lifebox_grpc.store import device_credentials as store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import Database

ROOT = Path(__file__).resolve().parents[1]

# Makes one change and its history row, prints "written", then waits for a line on stdin
# before COMMIT ("commit") and prints "committed"; it is killed at one of those two points.
CHILD = """
import asyncio, sys, uuid
import asyncpg
from lifebox_grpc.broker import passwords
from lifebox_grpc.store import device_credentials as store
from lifebox_grpc.store.pool import tenant_transaction

async def main(dsn, op, client, device, credential):
    conn = await asyncpg.connect(dsn)
    async with tenant_transaction(conn, uuid.UUID(client)):
        if op == "create":
            cid = await store.insert_credential(
                conn, uuid.UUID(client), uuid.UUID(device), passwords.hash_secret("s"), None
            )
            before = None
        else:
            cid = uuid.UUID(credential)
            before = await store.get_credential(conn, uuid.UUID(device), cid)
            if op == "rotate":
                await store.rotate_credential(conn, cid, passwords.hash_secret("s2"))
            else:
                await store.revoke_credential(conn, cid, None)
        after = await store.get_credential(conn, uuid.UUID(device), cid)
        await store.record_change(conn, before, after, None)
        print("written", flush=True)
        sys.stdin.readline()
    print("committed", flush=True)
    sys.stdin.readline()

asyncio.run(main(*sys.argv[1:]))
"""


async def _state(conn: asyncpg.Connection, device: uuid.UUID) -> tuple[list[tuple[Any, ...]], int]:
    async with tenant_transaction(conn, None, staff=True):
        creds = await conn.fetch(
            "SELECT id, hash_digest, revoked_at FROM device_credentials WHERE device_id = $1 "
            "ORDER BY id",
            device,
        )
        history = await conn.fetchval(
            "SELECT count(*) FROM device_metadata_history WHERE device_id = $1", device
        )
    return [tuple(r) for r in creds], int(history)


def _run_until(
    database: Database, op: str, client: uuid.UUID, device: uuid.UUID, cred: str, at: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database.owner_dsn, op, str(client), str(device), cred],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "written"
        if at == "committed":
            child.stdin.write("commit\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "committed"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@pytest.mark.parametrize("op", ["create", "rotate", "revoke"])
async def test_a_killed_change_leaves_the_credential_and_its_history_together(
    database: Database, owner_conn: asyncpg.Connection, op: str
) -> None:
    client = await make_client(owner_conn)
    device, _ = await make_device(owner_conn, client)
    cred = ""
    if op != "create":
        async with tenant_transaction(owner_conn, None, staff=True):
            cred = str(
                await store.insert_credential(
                    owner_conn, client, device, passwords.hash_secret("s"), None
                )
            )
    before = await _state(owner_conn, device)
    _run_until(database, op, client, device, cred, "written")
    assert await _state(owner_conn, device) == before, "a change outlived its process"

    _run_until(database, op, client, device, cred, "committed")
    creds, history = await _state(owner_conn, device)
    assert history == before[1] + 1
    assert creds != before[0]
    # After the kill, the device is still in a defined state: at most one live credential.
    assert sum(1 for _, _, revoked in creds if revoked is None) <= 1
