"""The dispatcher's MQTT 5 connection (paho-mqtt): QoS 1 publishes awaited until the broker's
PUBACK, from asyncio.

paho rather than the native module: the native MQTT module is ingest's receive path (a
subscriber that batches and acknowledges after COMMIT); the dispatcher publishes a few
hundred small messages per second and needs per-message PUBACK futures, MQTT 5 properties
and reconnects, which paho gives as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class PublishFailed(ConnectionError):
    """The broker did not acknowledge a publish (connection lost, or refused)."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    correlation_data: bytes
    response_topic: str
    expiry_s: int


class Publisher:
    """One MQTT 5 session publishing at QoS 1; :meth:`publish` resolves on PUBACK."""

    def __init__(self, url: str, client_id: str | None = None, inflight: int = 1000) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 1883
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id or f"lifebox-dispatch-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        if parts.scheme == "mqtts":
            self._client.tls_set()
        self._client.max_inflight_messages_set(inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._early: dict[int, bool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._refused: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect (paho reconnects by itself afterwards); ConnectionError when refused."""
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, clean_start=True)
        self._client.loop_start()
        deadline = self._loop.time() + timeout
        while not self._connected.is_set():
            if self._refused:
                raise ConnectionRefusedError(f"the broker refused the dispatcher: {self._refused}")
            if self._loop.time() > deadline:
                raise TimeoutError(f"no MQTT connection to {self._host}:{self._port}")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._fail_all("the dispatcher is stopping")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = str(reason)
            return
        self._refused = None
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        self._fail_all(f"connection lost: {reason}")

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        ok = not getattr(reason, "is_failure", False)
        with self._lock:
            future = self._waiting.pop(mid, None)
            if future is None:
                self._early[mid] = ok
                return
        self._resolve(future, ok)

    def _resolve(self, future: asyncio.Future[None], ok: bool) -> None:
        assert self._loop is not None

        def settle() -> None:
            if future.done():
                return
            if ok:
                future.set_result(None)
            else:
                future.set_exception(PublishFailed("the broker refused the publish"))

        self._loop.call_soon_threadsafe(settle)

    def _fail_all(self, why: str) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for future in waiting.values():
            loop.call_soon_threadsafe(_fail, future, why)

    def publish(self, message: Message) -> asyncio.Future[None]:
        """Publish at QoS 1; the future resolves on the broker's PUBACK."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if not self._connected.is_set():
            future.set_exception(PublishFailed("not connected to the broker"))
            return future
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.CorrelationData = message.correlation_data
        properties.ResponseTopic = message.response_topic
        properties.MessageExpiryInterval = max(1, message.expiry_s)
        properties.ContentType = "application/json"
        # Not under self._lock: paho calls on_publish holding its own mutex, which publish
        # takes too. A PUBACK that beats the registration below is kept in _early.
        info = self._client.publish(message.topic, message.payload, qos=1, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            future.set_exception(PublishFailed(mqtt.error_string(info.rc)))
            return future
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._waiting[info.mid] = future
        if early is not None:
            self._resolve(future, early)
        return future


def _fail(future: asyncio.Future[None], why: str) -> None:
    if not future.done():
        future.set_exception(PublishFailed(why))


async def wait_all(futures: list[asyncio.Future[None]], timeout: float) -> list[bool]:
    """Which of ``futures`` resolved (PUBACK) within ``timeout``."""
    if not futures:
        return []
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=timeout)
    return [f.done() and not f.cancelled() and f.exception() is None for f in futures]
