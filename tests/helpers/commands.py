"""Commands end to end: `lifebox dispatch` as a real subprocess on its own database role,
simulated devices that receive commands over MQTT and acknowledge them, and quick ways to
create commands and read their state."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc.commands.create import Requester, create_command
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.runtime.postgres import dsn
from lifebox_grpc.store import command_templates as template_store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.processes import MetricsProcess
from tests.helpers.services import Database

DISPATCH_ROLE = "lifebox_dispatch"
_ROLES: dict[int, str] = {}


def _mqtt_login(client: mqtt.Client, broker: Any, account: str | None) -> None:
    """Log in as ``account`` on a broker that has accounts; anonymous otherwise."""
    accounts = getattr(broker, "accounts", None)
    if account and accounts and account in accounts:
        client.username_pw_set(account, accounts[account])


def broker_url(broker: Any, account: str) -> str:
    """The URL of one of the broker's accounts, or its anonymous URL."""
    url_for = getattr(broker, "url_for", None)
    if url_for is not None:
        try:
            return str(url_for(account))
        except KeyError:
            pass
    return str(broker.url)


async def dispatch_dsn(database: Database) -> str:
    """The dispatcher's own role (created once per cluster by the superuser, as
    deploy/postgres/init-lifebox.sh would) with the migrations' grants."""
    server = database.server
    if server.port in _ROLES:
        return _ROLES[server.port]
    password = secrets.token_urlsafe(16)
    conn = await asyncpg.connect(database.superuser_lifebox_dsn)
    try:
        verb = (
            "ALTER"
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", DISPATCH_ROLE)
            else "CREATE"
        )
        literal = await conn.fetchval("SELECT quote_literal($1)", password)
        await conn.execute(f"{verb} ROLE {DISPATCH_ROLE} LOGIN PASSWORD {literal}")
        await conn.execute(f"GRANT CONNECT ON DATABASE lifebox TO {DISPATCH_ROLE}")
    finally:
        await conn.close()
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        await owner.execute("SELECT lifebox_apply_grants()")
    finally:
        await owner.close()
    url = dsn(server.port, DISPATCH_ROLE, password, socket_dir=server.socket_dir)
    _ROLES[server.port] = url
    return url


async def drop_dispatch_role(database: Database) -> None:
    """Remove the dispatcher's role again (other tests count the cluster's roles)."""
    if _ROLES.pop(database.server.port, None) is None:
        return
    conn = await asyncpg.connect(database.superuser_lifebox_dsn)
    try:
        await conn.execute(f"DROP OWNED BY {DISPATCH_ROLE}")
        await conn.execute(f"DROP ROLE {DISPATCH_ROLE}")
    finally:
        await conn.close()


@dataclass
class DispatcherProcess(MetricsProcess):
    """One `lifebox dispatch` subprocess."""

    database_url: str
    mqtt_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "LIFEBOX_DISPATCH_DATABASE_URL": self.database_url,
            "LIFEBOX_DISPATCH_MQTT_URL": self.mqtt_url,
            "LIFEBOX_DISPATCH_METRICS_PORT": str(self.metrics_port),
            "LIFEBOX_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        for name in ("LIFEBOX_DATABASE_URL", "LIFEBOX_MQTT_URL"):
            env.pop(name, None)
        self._launch(
            "dispatch",
            env,
            "lifebox_dispatch_mqtt_connected",
            "dispatcher connected",
            self.log_path,
        )


@contextmanager
def running_dispatcher(
    database_url: str,
    mqtt_url: str,
    *,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[DispatcherProcess]:
    process = DispatcherProcess(database_url, mqtt_url, extra_env=env or {}, log_path=log_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class Received:
    serial: str
    command_id: str
    payload: dict[str, Any]
    correlation_data: bytes | None
    response_topic: str | None
    expiry: int | None


class SimulatedDevices:
    """Devices receiving their commands over MQTT and (optionally) acknowledging them.

    One MQTT 5 connection per device when ``per_device`` (each subscribes to its own topic
    only, with its own credential where the broker has one), else one connection for all
    (the test publisher account). ``acks``: the statuses each device answers, in order, to a
    command it has not seen before (a duplicate is answered with its first status only, as a
    device that deduplicates by id would).
    """

    def __init__(
        self,
        broker: Any,
        serials: Sequence[str],
        *,
        acks: Sequence[str] = ("received", "accepted", "completed"),
        per_device: bool = True,
        credentials: dict[str, str] | None = None,
        ignore_first: bool = False,
    ) -> None:
        self.acks = tuple(acks)
        self.ignore_first = ignore_first
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.clients: list[mqtt.Client] = []
        self._subscribed = threading.Semaphore(0)
        groups = [[s] for s in serials] if per_device else [list(serials)]
        for group in groups:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            if per_device and credentials and group[0] in credentials:
                client.username_pw_set(group[0], credentials[group[0]])
            else:
                _mqtt_login(client, broker, "lifebox-test-publisher")
            client.on_message = self._on_message
            client.on_subscribe = lambda *_: self._subscribed.release()
            topics = [(f"lifebox/v1/{s}/commands/+", 1) for s in group]

            def on_connect(c: mqtt.Client, *_: Any, topics: list[Any] = topics) -> None:
                c.subscribe(topics)

            client.on_connect = on_connect
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            self.clients.append(client)
        for _ in groups:
            assert self._subscribed.acquire(timeout=30), "a simulated device never subscribed"

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        serial, command_id = parts[2], parts[4]
        props = message.properties
        payload = json.loads(message.payload)
        with self.lock:
            duplicate = any(r.command_id == command_id for r in self.received)
            self.received.append(
                Received(
                    serial,
                    command_id,
                    payload,
                    getattr(props, "CorrelationData", None),
                    getattr(props, "ResponseTopic", None),
                    getattr(props, "MessageExpiryInterval", None),
                )
            )
        if self.ignore_first:
            # Answers only a republish: the first publish of each command is "lost".
            statuses = self.acks if duplicate else ()
        else:
            statuses = self.acks[:1] if duplicate else self.acks
        for status in statuses:
            body: dict[str, Any] = {"status": status}
            if status == "completed":
                body["result"] = {"ok": True, "command": payload.get("command")}
            client.publish(f"{message.topic}/ack", json.dumps(body), qos=1)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.command_id for r in self.received]

    def close(self) -> None:
        for client in self.clients:
            client.loop_stop()
            client.disconnect()


@contextmanager
def simulated_devices(
    broker: Any, serials: Sequence[str], **kwargs: Any
) -> Iterator[SimulatedDevices]:
    devices = SimulatedDevices(broker, serials, **kwargs)
    try:
        yield devices
    finally:
        devices.close()


async def send(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    code: str = "ping",
    parameters: dict[str, Any] | None = None,
    *,
    timeout_s: int | None = None,
    key: str | None = None,
    requester: Requester | None = None,
) -> uuid.UUID:
    """A command through the internal create function, committed at once."""
    async with tenant_transaction(conn, client_id) as tx:
        template = await template_store.template_by_code(tx, code, client_id)
        assert template is not None
        created = await create_command(
            tx,
            client_id=client_id,
            device_id=device_id,
            template=template,
            parameters=parameters or {},
            requester=requester or Requester.rule(uuid.uuid4()),
            timeout_s=timeout_s,
            idempotency_key=key,
        )
    return created.command.id


async def statuses(conn: asyncpg.Connection, client_id: uuid.UUID) -> dict[uuid.UUID, str]:
    async with tenant_transaction(conn, client_id) as tx:
        rows = await tx.fetch(
            "SELECT id, status FROM control_commands WHERE client_id = $1", client_id
        )
    return {r["id"]: r["status"] for r in rows}


async def trail(
    conn: asyncpg.Connection, client_id: uuid.UUID, command_id: uuid.UUID
) -> list[tuple[str | None, str, str]]:
    async with tenant_transaction(conn, client_id) as tx:
        rows = await tx.fetch(
            "SELECT from_status, to_status, actor_kind FROM command_executions "
            "WHERE command_id = $1 ORDER BY at, id",
            command_id,
        )
    return [(r["from_status"], r["to_status"], r["actor_kind"]) for r in rows]
