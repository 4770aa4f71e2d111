"""A device that keeps the presence contract, as a real paho MQTT 5 client.

On connect it publishes, retained, ``{"state": "online", "session": N}`` to
``lifebox/v1/{serial}/status`` with a Last Will of ``{"state": "offline", "session": N}``
there (retained, QoS 1); :meth:`PresenceDevice.disconnect_cleanly` says offline with
``"reason": "clean"`` first, so the broker drops the Will.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto


def broker_login(broker: EmbeddedMosquitto) -> tuple[str, str] | None:
    """An account that may publish any device's topics on the test broker (None while the
    broker is anonymous)."""
    accounts: dict[str, str] = getattr(broker, "accounts", {}) or {}
    for name in ("lifebox-test-publisher",):
        if name in accounts:
            return name, accounts[name]
    return None


def status_topic(serial: str) -> str:
    return f"lifebox/v1/{serial}/status"


def status(state: str, session: int, **extra: Any) -> bytes:
    return json.dumps({"state": state, "session": session, **extra}).encode()


class PresenceDevice:
    """One connection of a device: its session number, keepalive and Will."""

    def __init__(
        self,
        serial: str,
        port: int,
        *,
        session: int | None = None,
        keepalive: int = 2,
        login: tuple[str, str] | None = None,
        will_delay: int = 0,
    ) -> None:
        """``will_delay`` > 0: an MQTT 5 Will Delay Interval and a persistent session (as
        long), so a reconnect within it takes the old session over without its Will."""
        self.serial = serial
        self.session = session if session is not None else time.time_ns() // 1_000_000
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"dev-{serial}", protocol=mqtt.MQTTv5
        )
        if login is not None:
            self.client.username_pw_set(*login)
        will_properties = None
        connect_properties = None
        if will_delay:
            will_properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            will_properties.WillDelayInterval = will_delay
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = will_delay
        self.client.will_set(
            status_topic(serial),
            status("offline", self.session),
            qos=1,
            retain=True,
            properties=will_properties,
        )
        self._connected = threading.Event()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.connect(
            "127.0.0.1",
            port,
            keepalive=keepalive,
            clean_start=not will_delay,
            properties=connect_properties,
        )
        self.client.loop_start()
        assert self._connected.wait(10), "device did not connect"
        info = self.client.publish(
            status_topic(serial), status("online", self.session), qos=1, retain=True
        )
        info.wait_for_publish(10)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def disconnect_cleanly(self) -> None:
        info = self.client.publish(
            status_topic(self.serial),
            status("offline", self.session, reason="clean"),
            qos=1,
            retain=True,
        )
        info.wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()

    def abandon(self) -> None:
        """Stop the client's thread without a DISCONNECT (after the network went silent)."""
        self.client.loop_stop()


@contextmanager
def presence_device(serial: str, port: int, **kwargs: Any) -> Iterator[PresenceDevice]:
    device = PresenceDevice(serial, port, **kwargs)
    try:
        yield device
    finally:
        device.abandon()


def retained_status(broker: EmbeddedMosquitto, serial: str, timeout: float = 10) -> bytes:
    """The status the broker holds retained for ``serial`` (b"" when none)."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    login = broker_login(broker)
    if login is not None:
        client.username_pw_set(*login)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
        done.set()

    client.on_connect = lambda c, *_: c.subscribe(status_topic(serial), qos=1)
    client.on_subscribe = lambda *_: threading.Timer(1.0, done.set).start()
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else b""


@contextmanager
def will_watch(broker: EmbeddedMosquitto, serial: str) -> Iterator[list[float]]:
    """Yields a list that gets the monotonic time at which the broker delivered an offline
    status of ``serial`` (a Will, say) to an observer subscribed from the start."""
    seen: list[float] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    login = broker_login(broker)
    if login is not None:
        client.username_pw_set(*login)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain and b'"offline"' in msg.payload and not seen:
            seen.append(time.monotonic())

    client.on_connect = lambda c, *_: c.subscribe(status_topic(serial), qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "observer not subscribed"
        yield seen
    finally:
        client.disconnect()
        client.loop_stop()
