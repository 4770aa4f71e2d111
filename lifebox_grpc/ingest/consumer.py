"""The MQTT side of ingest: paho-mqtt 2.x, MQTT 5, shared subscription, manual acks.

The paho network thread does as little as possible per message: it appends the message to
the pending list and, only when the list becomes non-empty or reaches the flush threshold,
wakes the flusher. Acknowledgements are sent by the flusher after the batch holding a message
has committed. The broker never has more than *Receive Maximum* of our messages un-acked, so a
slow database slows delivery instead of growing memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from lifebox_grpc import metrics
from lifebox_grpc.ingest.topics import KEPT_TOPIC_CHARS, SUBSCRIPTIONS, shared

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Received:
    """One delivered message, as the flusher sees it."""

    mid: int
    qos: int
    topic: str  # at most KEPT_TOPIC_CHARS characters (a longer one is cut at receipt)
    payload: bytes
    received_us: int
    generation: int  # the connection it arrived on: acks are only valid on that connection


class MqttConsumer:
    """A persistent MQTT 5 session whose messages are taken in batches and acked on commit."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        receive_maximum: int,
        session_expiry_s: int,
        wake: Callable[[], None],
        wake_at: int,
        wake_at_bytes: int,
    ) -> None:
        self._url = urlsplit(url)
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._wake = wake
        self._wake_at = wake_at
        self._wake_at_bytes = wake_at_bytes
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._pending: list[Received] = []
        self._generation = 0
        self._stopping = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self._url.username:
            self.client.username_pw_set(self._url.username, self._url.password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        self.client.connect_async(
            self._url.hostname or "127.0.0.1",
            self._url.port or 1883,
            keepalive=30,
            clean_start=False,  # a restarted worker gets what the broker kept for it
            properties=properties,
        )
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: object,
        _properties: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection", extra={"reason": str(reason)})
            return
        options = SubscribeOptions(qos=1)
        client.subscribe([(shared(topic), options) for topic in SUBSCRIPTIONS])
        metrics.MQTT_CONNECTED.set(1)
        log.info("connected to broker", extra={"session_present": bool(flags.session_present)})

    def _on_disconnect(self, *_: object) -> None:
        with self._lock:
            # Packet ids of the lost connection mean nothing on the next one: no ack for a
            # message received before this point is sent from now on.
            self._generation += 1
        metrics.MQTT_CONNECTED.set(0)
        metrics.MQTT_SUBSCRIBED.set(0)
        if not self._stopping:
            log.warning("disconnected from broker; paho reconnects")

    def _on_subscribe(self, *_: object) -> None:
        metrics.MQTT_SUBSCRIBED.set(1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.qos == 0 and (
            self._pending_bytes >= 4 * self._wake_at_bytes
            or len(self._pending) >= 4 * self._wake_at
        ):
            # Receive Maximum bounds QoS 1 only: QoS 0 (at most once by definition) is what
            # gives way when we fall behind, so memory stays bounded (in bytes, and in
            # messages for empty ones).
            metrics.INGEST_QOS0_DROPPED.inc()
            return
        topic = msg.topic
        if len(topic) > KEPT_TOPIC_CHARS:
            # Longer than any of ours (a reject): keep only what the reject stores, so
            # held messages cost what their payloads do, not up to 64 kB of topic each.
            topic = topic[:KEPT_TOPIC_CHARS]
        item = Received(
            msg.mid,
            msg.qos,
            topic,
            bytes(msg.payload),
            time.time_ns() // 1000,
            self._generation,
        )
        with self._lock:
            self._pending.append(item)
            count = len(self._pending)
            before = self._pending_bytes
            self._pending_bytes = before + len(item.payload)
        if (
            count == 1
            or count == self._wake_at
            or before < self._wake_at_bytes <= self._pending_bytes
        ):
            self._wake()

    # -- flusher side -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """The pending batch reached its message or byte threshold."""
        return len(self._pending) >= self._wake_at or self._pending_bytes >= self._wake_at_bytes

    def take(self) -> list[Received]:
        """The oldest pending messages, up to one batch's worth (message and byte thresholds):
        what arrives while a batch commits waits for the next one instead of swelling it."""
        with self._lock:
            pending = self._pending
            count = 0
            size = 0
            for item in pending:
                if count >= self._wake_at or (count and size >= self._wake_at_bytes):
                    break
                count += 1
                size += len(item.payload)
            batch, self._pending = pending[:count], pending[count:]
            self._pending_bytes -= size
        return batch

    def ack(self, batch: list[Received]) -> int:
        """PUBACK every QoS 1 message of a committed batch still on its own connection.

        Messages from an earlier connection are left alone: the broker redelivers them, and
        the database's unique key makes the second copy a no-op.
        """
        with self._lock:
            generation = self._generation
        acked = 0
        for item in batch:
            if item.qos and item.generation == generation:
                self.client.ack(item.mid, item.qos)
                acked += 1
        return acked
