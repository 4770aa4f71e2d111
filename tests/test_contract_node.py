"""The Node.js contract client (tests/contract/) against a real `lifebox serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import asyncpg
import grpc
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers import factories, processes
from tests.helpers.grpc import PASSWORD, SIGNING_KEY, make_account
from tests.helpers.services import Database

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "contract" / "auth_contract.mjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").exists(),
    reason="node and node_modules (make setup) are needed for the contract test",
)


@pytest.fixture
def serve_process(database: Database, broker: EmbeddedMosquitto) -> Iterator[str]:
    """`lifebox serve` as its own process, as deployments run it; yields host:port."""
    with processes.serve_process(database, broker, SIGNING_KEY, timeout=30) as address:
        yield address


async def test_node_client_logs_in_gets_me_and_meets_tenant_isolation(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    other = await factories.make_client(owner_conn)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_OTHER_CLIENT_ID": str(other),
    }
    node = await asyncio.create_subprocess_exec(
        "node", str(CLIENT), serve_process, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["user"] == str(account.user_id)
    assert report["role"] == "ROLE_CLIENT"
    assert report["isolation"]["code"] == grpc.StatusCode.NOT_FOUND.value[0]


# --- credentials (issue 13) ---
CREDENTIALS_CLIENT = ROOT / "tests" / "contract" / "device_credentials_contract.mjs"


async def test_node_client_creates_lists_and_revokes_a_device_credential(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    import uuid  # imports of this region kept in it (a shared file)

    from lifebox_grpc.store.pool import tenant_transaction

    client = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "client", client)
    device, serial = await factories.make_device(owner_conn, client)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_DEVICE_ID": str(device),
        "LIFEBOX_CONTRACT_SERIAL": serial,
    }
    node = await asyncio.create_subprocess_exec(
        "node", str(CREDENTIALS_CLIENT), serve_process, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["username"] == serial
    assert report["second_live"] == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert report["listed"] == 1
    async with tenant_transaction(owner_conn, None, staff=True):
        row = await owner_conn.fetchrow(
            "SELECT username, created_by, revoked_by, revoked_at FROM device_credentials "
            "WHERE id = $1",
            uuid.UUID(report["credential"]),
        )
    assert row is not None
    assert (row["username"], row["created_by"], row["revoked_by"]) == (
        serial,
        account.user_id,
        account.user_id,
    )
    assert row["revoked_at"] is not None


# --- end credentials (issue 13) ---


# --- presence (issue 13) ---
PRESENCE_CLIENT = ROOT / "tests" / "contract" / "device_presence_contract.mjs"


async def test_node_client_streams_and_reads_a_device_presence(
    serve_process: str, owner_conn: asyncpg.Connection, database: Database
) -> None:
    from datetime import UTC, datetime  # imports of this region kept in it (a shared file)

    from lifebox_grpc.store import presence
    from lifebox_grpc.store.presence import PresenceEvent

    client = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "client", client)
    device, _ = await factories.make_device(owner_conn, client)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_DEVICE_ID": str(device),
    }
    node = await asyncio.create_subprocess_exec(
        "node", str(PRESENCE_CLIENT), serve_process, env=env, stdout=PIPE, stderr=PIPE
    )
    assert node.stdout is not None
    line = await asyncio.wait_for(node.stdout.readline(), 60)
    assert json.loads(line) == {"live": True}, line
    ingest = await asyncpg.connect(database.ingest_dsn)
    try:
        for state, cause in (("online", "connect"), ("offline", "clean")):
            async with ingest.transaction():
                await presence.apply_events(
                    ingest,
                    [PresenceEvent(client, device, state, 17, cause, datetime.now(UTC), "status")],
                )
    finally:
        await ingest.close()
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert report["streamed"] == [
        "PRESENCE_STATE_ONLINE/PRESENCE_CAUSE_CONNECT/17",
        "PRESENCE_STATE_OFFLINE/PRESENCE_CAUSE_CLEAN/17",
    ]
    assert report["history"] == report["streamed"][::-1]
    assert report["session"] == "17"


# --- end presence (issue 13) ---


# --- commands (issue 14) ---
COMMANDS_CLIENT = ROOT / "tests" / "contract" / "commands_contract.mjs"


async def test_node_client_sends_repeats_and_cancels_a_command(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "client", client)
    device, _ = await factories.make_device(owner_conn, client)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_DEVICE_ID": str(device),
    }
    node = await asyncio.create_subprocess_exec(
        "node", str(COMMANDS_CLIENT), serve_process, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert report["delay_s"] == 5
    assert "parameters.delay_s" in report["bad"]
    assert report["cancelled"] == "COMMAND_STATUS_CANCELLED"
    assert report["trail"] == ["COMMAND_STATUS_PENDING", "COMMAND_STATUS_CANCELLED"]
    assert report["second_cancel"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]


# --- end commands (issue 14) ---


# --- billing (issue 16) ---
async def test_node_client_reads_its_billing_and_meets_isolation_and_the_staff_rule(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    assert account.client_id is not None
    other = await factories.make_client(owner_conn)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_OTHER_CLIENT_ID": str(other),
    }
    node = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "contract" / "billing_contract.mjs"),
        serve_process,
        env=env,
        stdout=PIPE,
        stderr=PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["balance"] == {"currency_code": "EGP", "amount": "0.0000"}
    assert report["isolation"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert report["staffOnly"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert report["badReturn"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert report["voidOther"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert report["cards"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]


# --- end billing (issue 16) ---


# --- alarms (issue 15) ---
async def test_node_client_creates_tries_and_acknowledges_alarms(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.helpers.alarms import make_event, make_rule

    client = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "client", client)
    device, _ = await factories.make_device(owner_conn, client)
    since = datetime.now(UTC) - timedelta(minutes=5)
    for i, (t, h) in enumerate([(25, 10), (31, 10), (31, 50)]):
        await factories.make_reading(
            owner_conn,
            client,
            device,
            since + timedelta(seconds=i),
            temperature_c=t,
            humidity_pct=h,
        )
    rule = await make_rule(owner_conn, client, device_id=device)
    event = await make_event(owner_conn, client, rule, device, since)
    other = await factories.make_client(owner_conn)
    other_device, _ = await factories.make_device(owner_conn, other)
    other_rule = await make_rule(owner_conn, other, device_id=other_device)
    other_event = await make_event(owner_conn, other, other_rule, other_device, since)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_DEVICE_ID": str(device),
        "LIFEBOX_CONTRACT_EVENT_ID": str(event),
        "LIFEBOX_CONTRACT_OTHER_EVENT_ID": str(other_event),
        "LIFEBOX_CONTRACT_SINCE": since.isoformat(),
    }
    node = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "contract" / "alarms_contract.mjs"),
        serve_process,
        env=env,
        stdout=PIPE,
        stderr=PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert report["bad"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert sorted(report["rules"])[0] == "hot and dry"
    assert report["tested"] == ["31.0 C"]
    assert report["evaluated"] == 3
    assert report["events"] == [str(event)]
    assert report["acked"] == "ALARM_EVENT_STATUS_ACTIVE_ACK"
    assert report["notes"] == ["from node"]
    assert report["isolation"] == grpc.StatusCode.NOT_FOUND.value[0]
    # --- alarm-reactions (issue 15) ---
    assert report["reactions"] == {
        "kinds": [
            "ALARM_REACTION_KIND_WEBHOOK/ALARM_REACTION_TIMING_ON_RAISE",
            "ALARM_REACTION_KIND_NOTIFY/ALARM_REACTION_TIMING_ON_RAISE_AND_CLEAR",
        ],
        "bad": grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "outcomes": 0,
    }
    # --- end alarm-reactions ---


# --- end alarms (issue 15) ---


# --- calculations (issue 17) ---
async def test_node_client_creates_updates_tries_and_deletes_a_formula(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    from datetime import UTC, datetime, timedelta  # imports of this region kept in it

    from tests.calculations.test_ingest_points import make_formula

    client = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "client", client)
    device, _ = await factories.make_device(owner_conn, client)
    since = datetime.now(UTC) - timedelta(minutes=5)
    for i, t in enumerate([100.0, 0.0]):
        await factories.make_reading(
            owner_conn, client, device, since + timedelta(seconds=i), temperature_c=t
        )
    await factories.make_reading(owner_conn, client, device, since + timedelta(seconds=2))
    other = await factories.make_client(owner_conn)
    other_formula = await make_formula(owner_conn, other, "secret", "temperature_c")
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_DEVICE_ID": str(device),
        "LIFEBOX_CONTRACT_OTHER_FORMULA_ID": str(other_formula),
        "LIFEBOX_CONTRACT_SINCE": since.isoformat(),
    }
    node = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "contract" / "calculations_contract.mjs"),
        serve_process,
        env=env,
        stdout=PIPE,
        stderr=PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert report["bad"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert report["scope"] == "FORMULA_SCOPE_DEVICE"
    assert report["versions"] == [1, 2, 3]
    assert report["formulas"] == ["temperature_f"]
    assert report["tested"] == [212, 32]
    assert report["skipped"] == {"missing_field": "1"}
    assert report["isolation"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert report["deleted"] == grpc.StatusCode.NOT_FOUND.value[0]


# --- end calculations (issue 17) ---


# --- dashboards (issue 17) ---
DASHBOARDS_CLIENT = ROOT / "tests" / "contract" / "dashboards_contract.mjs"


async def test_node_client_builds_a_page_reads_its_data_and_meets_a_stale_etag(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "client", client)
    device, _ = await factories.make_device(owner_conn, client)
    await factories.make_reading(owner_conn, client, device, voltage_l1=231.5)
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_DEVICE_ID": str(device),
    }
    node = await asyncio.create_subprocess_exec(
        "node", str(DASHBOARDS_CLIENT), serve_process, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert "widget.gauge.field" in report["bad"]
    assert report["latest_devices"] == [str(device)]
    assert report["column"] == {
        "field": "voltage_l1",
        "type": "FIELD_TYPE_DOUBLE",
        "doubles": [231.5],
    }
    assert report["renamed"] == "Renamed"
    assert report["stale"] == grpc.StatusCode.ABORTED.value[0]
    assert report["gone"] == grpc.StatusCode.NOT_FOUND.value[0]


# --- end dashboards (issue 17) ---


# --- files (issue 17) ---
FILES_CLIENT = ROOT / "tests" / "contract" / "files_contract.mjs"


async def test_node_client_uploads_downloads_ranges_and_deletes_a_file(
    serve_process: str, owner_conn: asyncpg.Connection
) -> None:
    import hashlib  # imports of this region kept in it (a shared file)

    from lifebox_grpc.store.pool import tenant_transaction

    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    other = await factories.make_client(owner_conn)
    async with tenant_transaction(owner_conn, other):
        other_file = await owner_conn.fetchval(
            "INSERT INTO files (client_id, name, content_type, size_bytes, sha256, storage_key) "
            "VALUES ($1, 'b.png', 'image/png', 0, $2, $3) RETURNING id",
            other,
            hashlib.sha256(b"").digest(),
            factories.unique("contract/files"),
        )
    env = {
        **os.environ,
        "LIFEBOX_CONTRACT_EMAIL": account.email,
        "LIFEBOX_CONTRACT_PASSWORD": PASSWORD,
        "LIFEBOX_CONTRACT_OTHER_FILE_ID": str(other_file),
    }
    node = await asyncio.create_subprocess_exec(
        "node", str(FILES_CLIENT), serve_process, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert report["access_level"] == "FILE_ACCESS_LEVEL_TENANT"
    assert report["range_bytes"] == 5000
    assert report["refused"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert report["refused_field"] is True
    assert report["used_bytes"] == 20_016
    assert len(report["listed"]) == 1
    assert report["gone"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert report["other"] == grpc.StatusCode.NOT_FOUND.value[0]


# --- end files (issue 17) ---
