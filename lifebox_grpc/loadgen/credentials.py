"""`lifebox loadgen --register`: a credential of its own for every simulated device.

Made through the store (store/device_credentials.py, as DeviceService's credential RPCs do,
with the same history rows), on the owner's connection and the staff path: a device with a
live password credential has it rotated in place (its old secret is unknown here), any other
gets a new one. The secrets exist only in this process and the load generator's private
credentials file; the broker learns the hashes from `lifebox broker-sync`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc.broker import passwords
from lifebox_grpc.store import device_credentials as store
from lifebox_grpc.store.pool import tenant_transaction


class BrokerRefusedError(RuntimeError):
    """The broker did not accept the new credentials in time (is broker-sync running?)."""


async def issue_credentials(
    conn: asyncpg.Connection, client_id: uuid.UUID, devices: Sequence[tuple[uuid.UUID, str]]
) -> dict[str, str]:
    """serial -> a fresh secret for each device, committed in one transaction."""
    secrets: dict[str, str] = {}
    async with tenant_transaction(conn, None, staff=True):
        for device_id, serial in devices:
            secret = passwords.new_secret()
            hashed = passwords.hash_secret(secret)
            live = [
                c
                for c in await store.list_credentials(conn, device_id, after=None, limit=10)
                if c.live and c.kind == store.PASSWORD
            ]
            if live:
                after = await store.rotate_credential(conn, live[0].id, hashed)
                assert after is not None  # locked by nobody else: loadgen owns its tenant
                await store.record_change(conn, live[0], after, None)
            else:
                credential_id = await store.insert_credential(
                    conn, client_id, device_id, hashed, None
                )
                created = await store.get_credential(conn, device_id, credential_id)
                assert created is not None
                await store.record_change(conn, None, created, None)
            secrets[serial] = secret
    return secrets


def _accepted(host: str, port: int, serial: str, secret: str, deadline: float) -> bool:
    result: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(serial, secret)
    client.on_connect = lambda _c, _u, _f, reason, _p: result.append(not reason.is_failure)
    try:
        client.connect(host, port)
        while not result and time.monotonic() < deadline:
            client.loop(0.1)
        client.disconnect()
    except OSError:
        return False
    return bool(result) and result[0]


def wait_until_accepted(mqtt_url: str, serial: str, secret: str, timeout: float = 30.0) -> None:
    """Connect as one device until the broker accepts it (the reconciler's pass covers every
    credential of the transaction at once)."""
    url = urlsplit(mqtt_url)
    deadline = time.monotonic() + timeout
    while True:
        if _accepted(url.hostname or "127.0.0.1", url.port or 1883, serial, secret, deadline):
            return
        if time.monotonic() > deadline:
            raise BrokerRefusedError(
                f"the broker did not accept the new device credentials within {timeout:.0f}s: "
                "is `lifebox broker-sync` running for it?"
            )
        time.sleep(0.2)
