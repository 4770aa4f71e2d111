"""What the broker dropped: mosquitto's ``$SYS/broker/publish/messages/dropped``.

mosquitto acknowledges a QoS 1 PUBLISH to its publisher as soon as it has it, then drops it
for a subscriber whose session queue is full (``max_queued_bytes``/``max_queued_messages``):
the device believes it was delivered. The broker counts every such drop since it started and
publishes the count (retained) on this topic every ``sys_interval`` seconds when it changed.
:class:`BrokerDrops` follows it on a connection of its own, so that ingest can export it as a
metric and log it, and the load generator can say how much of what it sent was dropped.

The count is the broker's, for all of its clients: on a broker that only LifeBox uses, the
telemetry ingest did not take in time (and commands queued for offline devices past the
limit). Brokers without this topic (EMQX exposes drops on its own API) leave it unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc import metrics

log = logging.getLogger(__name__)

TOPIC = "$SYS/broker/publish/messages/dropped"


class BrokerDrops:
    """The broker's drop count, kept current by a paho network thread."""

    def __init__(self, url: str, name: str = "lifebox-drops") -> None:
        parts = urlsplit(url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{name}-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 1883
        self._changed = threading.Condition()
        self._value: int | None = None
        self._updates = 0
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker drop count unavailable: %s", reason)
            return
        client.subscribe(TOPIC, qos=0)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            value = int(message.payload)
        except ValueError:
            return
        with self._changed:
            self._value = value
            self._updates += 1
            self._changed.notify_all()

    def start(self) -> BrokerDrops:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def value(self) -> int | None:
        """The last count the broker published (None: none received yet)."""
        with self._changed:
            return self._value

    def wait_first(self, timeout_s: float) -> int | None:
        """The count once the broker has sent one (its retained copy comes at SUBACK; a
        broker that never dropped anything may have none to send: then None)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._value is None and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return self._value


async def report_drops(url: str, stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """Export the broker's drop count (``lifebox_broker_dropped_messages``) until ``stop``,
    and log a warning each time it grew: readings the broker acknowledged and then lost
    because ingest did not take them in time (README: Overload)."""
    drops = BrokerDrops(url, "lifebox-ingest-drops").start()
    last: int | None = None
    try:
        while not stop.is_set():
            value = drops.value
            if value is not None:
                metrics.BROKER_DROPPED.set(value)
                if last is not None and value > last:
                    log.warning(
                        "the broker dropped messages it had acknowledged: ingest is not keeping "
                        "up (add workers or memory: README, Overload)",
                        extra={"dropped": value - last, "dropped_since_broker_start": value},
                    )
                last = value
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        await asyncio.to_thread(drops.stop)
