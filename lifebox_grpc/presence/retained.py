"""After a restart: read the devices' retained statuses and apply them.

A broker never delivers retained messages to shared subscriptions, so ingest workers (which
read ``$share/lifebox-ingest/…``) do not see a status a device published while LifeBox was
down. This reads them with a plain subscription to ``lifebox/v1/+/status`` and applies them
through the same ordering rule as every other event (``lifebox_presence_apply``): a retained
copy of a status already applied, or one older than the state, changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from lifebox_grpc.ingest.messages import MessageError
from lifebox_grpc.ingest.topics import ParsedTopic, TopicKind, parse_topic
from lifebox_grpc.presence.status import decode_status
from lifebox_grpc.store import ingest as ingest_store
from lifebox_grpc.store import presence as presence_store
from lifebox_grpc.store.pool import tenant_transaction

log = logging.getLogger(__name__)

STATUS_FILTER = "lifebox/v1/+/status"


@dataclass(frozen=True)
class RetainedReport:
    """What one read found: statuses read, applied (changed a state), and skipped (unknown
    or disabled devices, unreadable payloads)."""

    read: int
    applied: int
    skipped: int


class RetainedReadError(RuntimeError):
    """The broker could not be reached or refused the subscription."""


def _collect(url: str, quiet_s: float, timeout_s: float) -> list[tuple[str, bytes]]:
    """Retained (topic, payload) pairs of the status topics: everything the broker sends
    right after the SUBACK, until ``quiet_s`` pass without one (or ``timeout_s`` in all)."""
    parts = urlsplit(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"lifebox-presence-retained-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv5,
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    found: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    subscribed = threading.Event()
    refused: list[str] = []
    last = [time.monotonic()]

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(f"connect refused: {reason}")
            subscribed.set()
            return
        c.subscribe([(STATUS_FILTER, SubscribeOptions(qos=1))])

    def on_subscribe(
        _c: mqtt.Client, _u: object, _m: int, codes: list[ReasonCode], _p: object
    ) -> None:
        if any(code.is_failure for code in codes):
            refused.append(f"subscription refused: {codes}")
        last[0] = time.monotonic()
        subscribed.set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            with lock:
                found.append((msg.topic, bytes(msg.payload)))
                last[0] = time.monotonic()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + timeout_s
    try:
        client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
    except OSError as exc:
        raise RetainedReadError(f"broker unreachable: {exc}") from exc
    client.loop_start()
    try:
        if not subscribed.wait(max(0.0, deadline - time.monotonic())):
            raise RetainedReadError("no SUBACK from the broker")
        if refused:
            raise RetainedReadError(refused[0])
        while time.monotonic() < deadline:
            with lock:
                idle = time.monotonic() - last[0]
            if idle >= quiet_s:
                break
            time.sleep(min(0.05, quiet_s))
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return list(found)


async def apply_retained(
    conn: asyncpg.Connection, mqtt_url: str, *, quiet_s: float = 1.0, timeout_s: float = 60.0
) -> RetainedReport:
    """Read every retained status from the broker at ``mqtt_url`` and apply those of known
    devices that may send, in one transaction on ``conn`` (any role that may move presence:
    ingest, or the app role on the staff path). Raises :class:`RetainedReadError` when the
    broker cannot be read; the database is then untouched."""
    messages = await asyncio.to_thread(_collect, mqtt_url, quiet_s, timeout_s)
    statuses: dict[str, bytes] = {}
    for topic, payload in messages:
        parsed = parse_topic(topic)
        if isinstance(parsed, ParsedTopic) and parsed.kind is TopicKind.STATUS:
            statuses[parsed.serial] = payload  # one retained message per topic
    skipped = len(messages) - len(statuses)
    events: list[presence_store.PresenceEvent] = []
    async with tenant_transaction(conn, None, staff=True):
        refs = await ingest_store.devices_by_serial(conn, list(statuses))
        now = await conn.fetchval("SELECT now()")
        for serial, payload in statuses.items():
            ref = refs.get(serial)
            if ref is None or not ref.accepts_data:
                skipped += 1
                continue
            try:
                status = decode_status(payload)
            except MessageError as exc:
                # Ingest stored its reject when the device published it.
                log.info("unreadable retained status skipped", extra={"code": exc.code})
                skipped += 1
                continue
            events.append(status.event(ref.client_id, ref.device_id, now, "retained"))
        applied = await presence_store.apply_events(conn, events)
    report = RetainedReport(len(messages), applied, skipped)
    log.info("retained statuses applied", extra=report.__dict__)
    return report
