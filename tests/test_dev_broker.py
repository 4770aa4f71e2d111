"""`lifebox dev` with anonymous access off: its broker-sync child takes the lease and lets a
device in with its own credential, and nobody in without one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from lifebox_grpc.broker import tls
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import device_credentials
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.broker import can_log_in, connect, device_credential
from tests.helpers.factories import make_client, make_device
from tests.helpers.processes import processes_mentioning
from tests.helpers.services import private_tmpdir
from tests.helpers.wait import wait_until
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
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "broker-sync" in output
    assert processes_mentioning(str(home)) == [], "a child outlived lifebox dev"
    for line in output.splitlines():  # no account password is printed
        assert "@127.0.0.1" not in line, line
    assert Path(home / "mqtt" / "accounts.json").stat().st_mode & 0o077 == 0
