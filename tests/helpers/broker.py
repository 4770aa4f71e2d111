"""Real device credentials on the session broker, and MQTT sessions that record what the
broker answered (CONNACK, SUBACK, PUBACK reason codes, messages, disconnects)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from lifebox_grpc.broker import passwords
from lifebox_grpc.broker.reconcile import reconcile
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import device_credentials
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.wait import wait_until


@dataclass
class Session:
    """One MQTT 5 client and what the broker told it."""

    client: mqtt.Client
    connack: list[ReasonCode] = field(default_factory=list)
    suback: list[ReasonCode] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    @property
    def refused(self) -> bool:
        return bool(self.connack) and self.connack[0].is_failure

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int,
    user: str | None,
    secret: str | None,
    *,
    client_id: str | None = None,
    ca: Path | None = None,
) -> Session:
    """Connect (clean start) and wait for the CONNACK; ``user=None`` connects anonymously;
    with ``ca``, over TLS checking the broker's certificate against it."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or uuid.uuid4().hex, protocol=mqtt.MQTTv5
    )
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    session = Session(client)
    if user is not None:
        client.username_pw_set(user, secret)
    client.on_connect = lambda c, u, f, rc, p: session.connack.append(rc)
    client.on_subscribe = lambda c, u, mid, rcs, p: session.suback.extend(rcs)
    client.on_message = lambda c, u, m: session.received.append(m.topic)
    client.on_disconnect = lambda c, u, f, rc, p: session.disconnected.set()
    client.reconnect_delay_set(60, 60)  # a refused or dropped session stays down
    client.connect("127.0.0.1", port, keepalive=30, clean_start=True, properties=Properties(1))  # type: ignore[no-untyped-call]
    client.loop_start()
    wait_until(lambda: bool(session.connack), timeout=10, what="CONNACK")
    return session


async def sync_broker(conn: asyncpg.Connection, broker: EmbeddedMosquitto) -> bool:
    """One reconciler pass onto ``broker`` (its own accounts and extra ACL kept)."""
    return await reconcile(
        conn,
        password_path=broker.password_path,
        acl_path=broker.acl_path,
        broker_pid=broker.pid,
        service_entries=broker.service_entries(),
        extra_acl=broker.extra_acl,
        owner=broker.file_owner,
    )


async def device_credential(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    broker: EmbeddedMosquitto | None = None,
) -> tuple[uuid.UUID, str]:
    """A live credential of the device (id, secret); with ``broker``, the broker is
    reconciled so the device can log in at once. ``conn``: the owner's connection."""
    secret = passwords.new_secret()
    async with tenant_transaction(conn, None, staff=True):
        credential_id = await device_credentials.insert_credential(
            conn, client_id, device_id, passwords.hash_secret(secret), None
        )
    if broker is not None:
        await sync_broker(conn, broker)
    return credential_id, secret


def lease_key(port: int) -> int:
    """The reconciler's lease key for the test broker on ``port``."""
    return 0x2B500000 + port  # clear of every lease key the platform uses (0x11FE....)


@dataclass
class BrokerSyncProcess:
    """`lifebox broker-sync` as a real subprocess, pointed at one embedded broker's files,
    with its own database role and metrics port."""

    broker_sync_dsn: str
    broker: EmbeddedMosquitto
    metrics_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        broker = self.broker
        kept = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOX_")}
        return {
            **kept,
            "LIFEBOX_BROKER_SYNC_DATABASE_URL": self.broker_sync_dsn,
            "LIFEBOX_BROKER_PASSWORD_FILE": str(broker.password_path),
            "LIFEBOX_BROKER_ACL_FILE": str(broker.acl_path),
            "LIFEBOX_BROKER_PID_FILE": str(broker.pid_path),
            "LIFEBOX_BROKER_SERVICE_PASSWORDS_FILE": str(broker.service_passwords_path),
            "LIFEBOX_BROKER_SERVICE_ACL_FILE": str(broker.extra_acl_path),
            **({"LIFEBOX_BROKER_FILE_OWNER": broker.file_owner} if broker.file_owner else {}),
            "LIFEBOX_BROKER_SYNC_METRICS_PORT": str(self.metrics_port),
            "LIFEBOX_BROKER_SYNC_DEBOUNCE_MS": "50",
            "LIFEBOX_BROKER_SYNC_LEASE_RETRY_SECONDS": "0.2",
            # One lease per broker: the session broker's reconciler and a test's own broker's
            # reconciler run on the same database.
            "LIFEBOX_BROKER_SYNC_LEASE_KEY": str(lease_key(broker.port)),
            "LIFEBOX_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }

    def start(self, *, wait_for_lease: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lifebox_grpc.cli", "broker-sync"], env=self.env()
        )
        wait_until(
            lambda: self.exited() or self.metric("lifebox_broker_sync_lease_held") >= 0,
            60,
            "broker-sync metrics",
        )
        if wait_for_lease:
            wait_until(
                lambda: self.exited() or self.metric("lifebox_broker_sync_passes_total") >= 1,
                30,
                "broker-sync's first pass",
            )
        assert not self.exited(), f"broker-sync exited with {self.proc.returncode}"

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
            ) as response:
                text = response.read().decode()
        except OSError:
            return float("nan")
        total = float("nan")
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total = (0.0 if total != total else total) + float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running_broker_sync(
    broker_sync_dsn: str, broker: EmbeddedMosquitto, **env: str
) -> Iterator[BrokerSyncProcess]:
    process = BrokerSyncProcess(broker_sync_dsn, broker, extra_env=env)
    try:
        process.start()
        yield process
    finally:
        process.stop()


def can_log_in(port: int, user: str, secret: str, ca: Path | None = None) -> bool:
    """Whether a fresh connect with these credentials is accepted now (over TLS with ``ca``)."""
    session = connect(port, user, secret, ca=ca)
    try:
        return not session.refused
    finally:
        session.close()
