"""Run `lifebox ingest` as a real subprocess and publish to it like devices do."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store.fleet import Fleet
from lifebox_grpc.store.fleet import register_fleet as store_register_fleet
from tests.helpers.processes import MetricsProcess
from tests.helpers.services import TEST_PUBLISHER, Database, broker_on


@dataclass
class IngestProcess(MetricsProcess):
    """One worker subprocess with its own MQTT session id and metrics port."""

    database: Database
    mqtt_url: str
    client_id: str = field(default_factory=lambda: f"test-ingest-{uuid.uuid4().hex[:8]}")
    metrics_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None  # the worker's stderr goes here when set
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "LIFEBOX_DATABASE_URL": self.database.app_dsn,
            "LIFEBOX_OWNER_DATABASE_URL": self.database.owner_dsn,
            "LIFEBOX_INGEST_DATABASE_URL": self.database.ingest_dsn,
            "LIFEBOX_MQTT_URL": self.mqtt_url,
            "LIFEBOX_INGEST_CLIENT_ID": self.client_id,
            "LIFEBOX_INGEST_METRICS_PORT": str(self.metrics_port),
            "LIFEBOX_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        self._launch("ingest", env, "lifebox_mqtt_subscribed", "ingest subscribed", self.log_path)

    def rss_bytes(self) -> int:
        """The worker's resident set size now (VmRSS in /proc/<pid>/status)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def forget_session(self, port: int) -> None:
        """Drop the broker's persistent session of this worker (clean start, no expiry), as
        the worker's own account."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, self.client_id, protocol=mqtt.MQTTv5)
        url = urlsplit(self.mqtt_url)
        if url.username:
            client.username_pw_set(url.username, url.password)
        client.connect("127.0.0.1", port, clean_start=True)
        client.disconnect()


@contextmanager
def running_ingest(
    database: Database, broker_url: str, broker_port: int, log_path: Path | None = None, **env: str
) -> Iterator[IngestProcess]:
    worker = IngestProcess(database, broker_url, extra_env=env, log_path=log_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        worker.forget_session(broker_port)


class Publisher:
    """A device-side MQTT 5 client publishing QoS 1 and waiting for every PUBACK.

    It logs in as the test broker's publisher account (any topic: tests publish as arbitrary
    devices), or as ``username``/``password`` (a device's own credential)."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        if username is None:
            username = TEST_PUBLISHER
            password = broker_on(port).accounts[TEST_PUBLISHER]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self._refused: list[object] = []

        def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                self._refused.append(reason)
            self._connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._connected.wait(10)
        if self._refused:
            self.close()
            raise ConnectionRefusedError(f"the broker refused {username}: {self._refused[0]}")

    def publish_all(self, messages: Sequence[tuple[str, bytes]], timeout: float = 120) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextmanager
def publisher(
    port: int, username: str | None = None, password: str | None = None
) -> Iterator[Publisher]:
    pub = Publisher(port, username, password)
    try:
        yield pub
    finally:
        pub.close()


async def register_fleet(dsn: str, count: int, status: str = "active") -> Fleet:
    """A new tenant with `count` devices in the given status."""
    tag = uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(dsn)
    try:
        return await store_register_fleet(
            conn,
            name=f"Ingest test {tag}",
            slug=f"t-{tag}",
            serial_prefix=f"T{tag}-",
            count=count,
            status=status,
        )
    finally:
        await conn.close()
