"""`lifebox dev` with anonymous access off: its broker-sync child takes the lease and lets a
device in with its own credential, and nobody in without one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest

from lifebox_grpc.broker import tls
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.runtime.home import SECRETS_FILE, load_or_create_secrets
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import device_credentials
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.broker import can_log_in, connect, device_credential
from tests.helpers.commands import send, simulated_devices, statuses, trail
from tests.helpers.factories import make_client, make_device
from tests.helpers.processes import processes_mentioning
from tests.helpers.services import private_tmpdir
from tests.helpers.wait import async_wait_until, wait_until
from tests.test_device_certificates_broker import admits, device_key_and_csr

pytestmark = pytest.mark.timeout(240)


def _metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def _device_with_credential(owner_dsn: str) -> tuple[str, str]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        client = await make_client(conn)
        device, serial = await make_device(conn, client)
        _, secret = await device_credential(conn, client, device)
    finally:
        await conn.close()
    return serial, secret


async def _device_with_certificate(owner_dsn: str, home: Path) -> tuple[str, tuple[Path, Path]]:
    """A device enrolled with a certificate the dev CA signed (as CreateDeviceCredential
    does), its certificate and key written beside the home."""
    authority = tls.Authority.load(home / "tls" / tls.CA_CERT, home / "tls" / tls.CA_KEY)
    conn = await asyncpg.connect(owner_dsn)
    try:
        client = await make_client(conn)
        device, serial = await make_device(conn, client)
        key, csr = device_key_and_csr()
        issued = authority.issue_device(csr, serial)
        async with tenant_transaction(conn, None, staff=True):
            await device_credentials.insert_certificate(conn, client, device, issued, None)
    finally:
        await conn.close()
    paths = (home.parent / "device.crt", home.parent / "device.key")
    paths[0].write_text(issued.pem)
    paths[1].write_bytes(key)
    return serial, paths


# --- commands (issue 14) ---
async def _command_reaches_the_device(owner_dsn: str, mqtt_port: int) -> None:
    """A command made as SendCommand makes it, received by a device subscribed with its own
    credential, acknowledged to `completed`; published by the lifebox_dispatch role."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        client = await make_client(conn)
        device, serial = await make_device(conn, client)
        _, secret = await device_credential(conn, client, device)
        wait_until(lambda: can_log_in(mqtt_port, serial, secret), 10, "the device let in")
        broker = SimpleNamespace(port=mqtt_port)
        with simulated_devices(broker, [serial], credentials={serial: secret}) as devices:
            command = await send(conn, client, device, "ping")
            wait_until(lambda: devices.ids() == [str(command)], 30, "the command at the device")
            received = devices.received[0]
            assert received.payload["id"] == str(command)
            assert received.correlation_data == str(command).encode()

            async def completed() -> bool:
                return (await statuses(conn, client)).get(command) == "completed"

            await async_wait_until(completed, 30, "the command completed")
        steps = [(before, after) for before, after, _ in await trail(conn, client, command)]
        assert steps == [
            (None, "pending"),
            ("pending", "sent"),
            ("sent", "delivered"),
            ("delivered", "acknowledged"),
            ("acknowledged", "completed"),
        ]
        sent_by = await conn.fetchval(
            "SELECT array_agg(DISTINCT usename) FROM pg_stat_activity "
            "WHERE application_name = 'lifebox-dispatch'"
        )
        assert sent_by == ["lifebox_dispatch"]
    finally:
        await conn.close()


def test_dev_runs_broker_sync_and_its_broker_refuses_anonymous_clients() -> None:
    home = private_tmpdir("lifebox-test-dev-broker-") / "home"
    ports = {
        name: free_port()
        for name in (
            "GRPC",
            "HTTP",
            "INGEST_METRICS",
            "BROKER_SYNC_METRICS",
            "MQTT_TLS",
            "MQTT_MTLS",
            "DISPATCH_METRICS",  # --- commands (issue 14)
            "REACTIONS_METRICS",  # --- alarm-reactions (issue 15)
        )
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIFEBOX_")},
        "LIFEBOX_HOME": str(home),
        **{f"LIFEBOX_{name}_PORT": str(port) for name, port in ports.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifebox_grpc.cli", "dev", "--no-demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sync_port = ports["BROKER_SYNC_METRICS"]
    try:
        wait_until(
            lambda: (
                proc.poll() is not None or _metric(sync_port, "lifebox_broker_sync_lease_held") == 1
            ),
            150,
            "broker-sync holding the lease",
        )
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        wait_until(
            lambda: _metric(ports["INGEST_METRICS"], "lifebox_mqtt_subscribed") == 1,
            60,
            "ingest logged in and subscribed",
        )
        settings = Settings(mode=Mode.DEV, home=home)
        mqtt_port = int((home / "mqtt" / "port").read_text())
        anonymous = connect(mqtt_port, None, None)
        assert anonymous.refused, "lifebox dev's broker let an anonymous client in"
        anonymous.close()
        serial, secret = asyncio.run(_device_with_credential(resolve_endpoints(settings).owner_dsn))
        wait_until(lambda: can_log_in(mqtt_port, serial, secret), 10, "the device let in")
        assert not can_log_in(mqtt_port, serial, "wrong")
        ca = home / "tls" / tls.CA_CERT
        assert can_log_in(ports["MQTT_TLS"], serial, secret, ca=ca), "no TLS password login"
        owner_dsn = resolve_endpoints(settings).owner_dsn
        cert_serial, cert = asyncio.run(_device_with_certificate(owner_dsn, home))
        wait_until(
            lambda: admits(ports["MQTT_MTLS"], cert_serial, ca, cert), 10, "the certificate let in"
        )
        # --- commands (issue 14): dev's dispatch child, on its own role and broker account,
        # delivers a command to the device, whose acks (through dev's ingest) complete it.
        wait_until(
            lambda: _metric(ports["DISPATCH_METRICS"], "lifebox_dispatch_mqtt_connected") == 1,
            60,
            "dispatch connected to the broker",
        )
        asyncio.run(_command_reaches_the_device(owner_dsn, mqtt_port))
        # --- alarm-reactions (issue 15): dev runs `lifebox reactions` too ---
        wait_until(
            lambda: _metric(ports["REACTIONS_METRICS"], "lifebox_alarm_reactions_up") == 1,
            60,
            "the reaction worker running",
        )
        # --- end alarm-reactions ---
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "broker-sync" in output
    assert "  dispatch      commands -> devices" in output  # --- commands (issue 14)
    assert "  reactions     alarm reactions" in output  # --- alarm-reactions (issue 15)
    assert processes_mentioning(str(home)) == [], "a child outlived lifebox dev"
    for line in output.splitlines():  # no account password is printed
        assert "@127.0.0.1" not in line, line
    assert Path(home / "mqtt" / "accounts.json").stat().st_mode & 0o077 == 0


# --- commands (issue 14) ---
def test_a_home_from_before_the_dispatcher_gets_its_role_password_once(tmp_path: Path) -> None:
    first = load_or_create_secrets(tmp_path)
    path = tmp_path / SECRETS_FILE
    old = json.loads(path.read_text())
    del old["pg_dispatch_password"]  # as a home made before issue 14 has it
    path.write_text(json.dumps(old))
    upgraded = load_or_create_secrets(tmp_path)
    assert upgraded.pg_dispatch_password
    assert upgraded.pg_app_password == first.pg_app_password, "other secrets changed"
    assert load_or_create_secrets(tmp_path) == upgraded, "the password is not kept"
    assert path.stat().st_mode & 0o077 == 0
