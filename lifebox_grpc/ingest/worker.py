"""`lifebox ingest`: one MQTT ingest worker process."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import start_http_server

from lifebox_grpc import metrics
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
    problems = settings.production_problems()
    if problems:
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
    endpoints = resolve_endpoints(settings)
    server, _thread = start_http_server(settings.ingest_metrics_port, addr=settings.http_host)
    log.info("metrics listening", extra={"port": server.server_port})
    url = urlsplit(endpoints.mqtt_url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5, manual_ack=True
    )
    if url.username:
        client.username_pw_set(url.username, url.password)

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        metrics.MQTT_CONNECTED.set(1)
        log.info("connected to broker", extra={"reason": str(reason)})

    def on_disconnect(*_: object) -> None:
        metrics.MQTT_CONNECTED.set(0)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    client.disconnect()
    client.loop_stop()
    server.shutdown()
    return 0
