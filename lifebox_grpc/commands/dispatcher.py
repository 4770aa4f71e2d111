"""`lifebox dispatch`: publishes the command outbox to devices, one command in flight each.

A process of its own, not part of `serve` or `ingest`: it holds its own database role
(lifebox_dispatch: the outbox, the commands' message columns, their trail) and its own
broker account (publish on command topics only), so the API never holds a broker credential
and ingest's account never publishes; it scales and restarts independently, and the crash
tests kill exactly it. Any number may run: a claim is ``FOR UPDATE SKIP LOCKED`` on the job
and its command, held until the broker's PUBACKs are recorded, so no job is published by two
dispatchers at once; a dispatcher killed anywhere leaves its jobs due again (republished
with the same id, which devices deduplicate) or already recorded as sent.

Each loop: wait for a NOTIFY (a job came or went) or the poll interval; claim a batch of due
head-of-device jobs; expire those that can no longer be delivered (lifetime over, device
disabled, tenant suspended); publish the rest at QoS 1 (MQTT 5: correlation data = the
command id, response topic = its ack topic, message expiry = its remaining lifetime); record
each PUBACK as ``sent`` and reschedule the job for its retry (or, after the last, its
expiry); commit. A sweep expires every unfinished command past its expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from lifebox_grpc.commands.mqtt import Message, Publisher, wait_all
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.store import command_dispatch as store
from lifebox_grpc.store.pool import tenant_transaction

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "lifebox_command_outbox"
DELIVERABLE_DEVICE = ("provisioned", "active")

PUBLISHED = Counter(
    "lifebox_dispatch_published_total", "Command publishes the broker acknowledged", ["kind"]
)
EXPIRED = Counter("lifebox_dispatch_expired_total", "Commands expired by a dispatcher", ["reason"])
PUBLISH_FAILURES = Counter(
    "lifebox_dispatch_publish_failures_total", "Publishes without a PUBACK in time"
)
DELIVERY_LATENCY = Histogram(
    "lifebox_dispatch_delivery_latency_seconds",
    "From a command's creation to the broker's PUBACK of its first publish",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BY_STATUS = Gauge("lifebox_commands_unfinished", "Unfinished commands by status", ["status"])
UP = Gauge("lifebox_dispatch_mqtt_connected", "1 while connected to the broker")


@dataclass(frozen=True)
class DispatchEndpoints:
    dsn: str
    mqtt_url: str


def resolve(settings: Settings) -> DispatchEndpoints:
    """The dispatcher's own DSN and broker account; in dev, unset ones fall back to the
    embedded application role and the embedded broker's service account."""
    dsn = settings.dispatch_database_url
    url = settings.dispatch_mqtt_url
    if dsn is not None and url is not None:
        return DispatchEndpoints(dsn.get_secret_value(), url.get_secret_value())
    if settings.mode is not Mode.DEV:
        raise RuntimeError(
            "`lifebox dispatch` needs LIFEBOX_DISPATCH_DATABASE_URL and LIFEBOX_DISPATCH_MQTT_URL"
        )
    from urllib.parse import urlsplit

    from lifebox_grpc.broker import files
    from lifebox_grpc.runtime.endpoints import resolve_endpoints
    from lifebox_grpc.runtime.mosquitto import embedded_mqtt_url

    endpoints = resolve_endpoints(settings)
    if url is None:
        # The embedded broker's account that may publish commands (ingest's only reads).
        port = urlsplit(endpoints.mqtt_url).port or 0
        embedded = embedded_mqtt_url(settings.home.resolve() / "mqtt", port, files.DISPATCH)
        mqtt_url = embedded or endpoints.mqtt_url
    else:
        mqtt_url = url.get_secret_value()
    return DispatchEndpoints(dsn.get_secret_value() if dsn else endpoints.app_dsn, mqtt_url)


def command_topic(serial: str, command_id: object) -> str:
    return f"lifebox/v1/{serial}/commands/{command_id}"


def message_of(job: store.Job, now: datetime) -> Message:
    """The device contract: topic, JSON payload and MQTT 5 properties of one publish."""
    topic = command_topic(job.serial, job.command_id)
    payload = {
        "id": str(job.command_id),
        "command": job.command_type,
        "parameters": job.parameters,
        "issued_at": job.issued_at.isoformat(),
        "expires_at": job.expires_at.isoformat(),
        "attempt": job.attempts + 1,
    }
    return Message(
        topic=topic,
        payload=json.dumps(payload, separators=(",", ":")).encode(),
        correlation_data=str(job.command_id).encode(),
        response_topic=f"{topic}/ack",
        expiry_s=math.ceil((job.expires_at - now).total_seconds()),
    )


def undeliverable(job: store.Job, now: datetime) -> str | None:
    """Why the job's command must expire now instead of being published, if it must."""
    if job.expires_at <= now:
        return store.LIFETIME_ENDED
    if job.client_status != "active":
        return f"the client is {job.client_status}"
    if job.device_status not in DELIVERABLE_DEVICE:
        return f"the device is {job.device_status}"
    return None


class Dispatcher:
    """Claim-and-publish loops and the expiry sweep of one process."""

    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, settings: Settings) -> None:
        self.pool = pool
        self.publisher = publisher
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.wake = asyncio.Event()

    async def dispatch_once(self) -> int:
        """One claim: publish what is due; the number of jobs claimed."""
        settings = self.settings
        async with self.pool.acquire() as conn, tenant_transaction(conn, None, staff=True):
            jobs = await store.claim_jobs(conn, settings.dispatch_batch_size)
            if not jobs:
                return 0
            now = datetime.now(UTC)
            expiring: dict[str, list[object]] = {}
            sendable: list[store.Job] = []
            for job in jobs:
                reason = undeliverable(job, now)
                if reason is not None:
                    expiring.setdefault(reason, []).append(job.command_id)
                elif job.status == "sent" and job.attempts > job.max_retries:
                    # Every retry is spent: it waits for an ack or its expiry.
                    await store.hold_until(conn, job.command_id, job.expires_at)
                else:
                    sendable.append(job)
            for reason, ids in expiring.items():
                count = await store.expire(conn, ids, reason)  # type: ignore[arg-type]
                EXPIRED.labels(reason.split(" ")[-1]).inc(count)
            futures = [self.publisher.publish(message_of(job, now)) for job in sendable]
            acked = await wait_all(futures, settings.dispatch_puback_timeout_seconds)
            retry_at = datetime.now(UTC) + timedelta(
                seconds=settings.commands_retry_interval_seconds
            )
            sent = []
            for job, ok in zip(sendable, acked, strict=True):
                if not ok:
                    PUBLISH_FAILURES.inc()
                    continue  # still due: published again by the next claim
                last = job.attempts + 1 > job.max_retries
                sent.append((job.command_id, job.expires_at if last else retry_at))
                PUBLISHED.labels("republish" if job.status == "sent" else "first").inc()
                if job.status == "pending" and job.attempts == 0:
                    DELIVERY_LATENCY.observe((datetime.now(UTC) - job.issued_at).total_seconds())
            await store.record_sent(conn, sent, self.name)
        return len(jobs)

    async def sweep_once(self) -> int:
        async with self.pool.acquire() as conn, tenant_transaction(conn, None, staff=True):
            count = await store.expire_due(conn, 1000)
        if count:
            EXPIRED.labels("lifetime").inc(count)
        return count

    async def claim_loop(self, stop: asyncio.Event) -> None:
        """Claim while jobs are due; then sleep until a NOTIFY or the poll interval.

        The wake-up is cleared *before* a claim, so a NOTIFY that arrives during a pass is
        not lost (it would have waited for the poll interval): whoever clears it claims
        after it. Of several loops asleep, only the first to run takes a wake-up; the others
        go back to sleep instead of each running an empty claim transaction."""
        while not stop.is_set():
            self.wake.clear()
            try:
                claimed = await self.dispatch_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("dispatch pass failed; retrying", extra={"error": str(exc)})
                await _sleep(stop, 1.0)
                continue
            if claimed >= self.settings.dispatch_batch_size:
                continue  # more may be due at once
            await self._sleep_until_woken(stop)

    async def _sleep_until_woken(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.dispatch_poll_seconds
        while not self.wake.is_set() and not stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            stopping = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait(
                    {stopping, woken}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
                woken.cancel()

    async def sweep_loop(self, stop: asyncio.Event) -> None:
        last_gauge = 0.0
        while not stop.is_set():
            try:
                await self.sweep_once()
                if time.monotonic() - last_gauge > 5:
                    last_gauge = time.monotonic()
                    async with (
                        self.pool.acquire() as conn,
                        tenant_transaction(conn, None, staff=True),
                    ):
                        counts = await store.status_counts(conn)
                    for status in ("pending", "sent", "delivered", "acknowledged"):
                        BY_STATUS.labels(status).set(counts.get(status, 0))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("expiry sweep failed; retrying", extra={"error": str(exc)})
            UP.set(1 if self.publisher.connected else 0)
            await _sleep(stop, 0.5)

    async def listen_loop(self, dsn: str, stop: asyncio.Event) -> None:
        """Wake the claim loops on every outbox NOTIFY; reconnect when the connection drops."""
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("outbox LISTEN connect failed", extra={"error": str(exc)})
                await _sleep(stop, 1.0)
                continue
            try:
                await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self.wake.set())
                self.wake.set()  # anything missed while not listening
                while not stop.is_set() and not conn.is_closed():
                    await _sleep(stop, 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


_ROLE = """
SELECT rolname, rolsuper, rolbypassrls, rolcreaterole,
       EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid
               AND c.relnamespace = 'public'::regnamespace) AS owns_tables
FROM pg_roles r WHERE rolname = current_user
"""


async def role_problems(conn: asyncpg.Connection) -> list[str]:
    """Why the dispatcher's database role is too powerful for it (empty when fine): it must
    not be a superuser, bypass row-level security, create roles or own tables."""
    row = await conn.fetchrow(_ROLE)
    problems = []
    for flag, what in (
        ("rolsuper", "is a superuser"),
        ("rolbypassrls", "bypasses row-level security"),
        ("rolcreaterole", "may create roles"),
        ("owns_tables", "owns tables"),
    ):
        if row[flag]:
            problems.append(
                f"role {row['rolname']} {what}: give LIFEBOX_DISPATCH_DATABASE_URL the "
                "lifebox_dispatch role"
            )
    return problems


async def run_dispatch(settings: Settings, stop: asyncio.Event) -> None:
    endpoints = resolve(settings)
    check = await asyncpg.connect(endpoints.dsn)
    try:
        problems = await role_problems(check)
    finally:
        await check.close()
    if problems:
        raise RoleRefused("; ".join(problems))
    pool = await asyncpg.create_pool(
        endpoints.dsn,
        min_size=1,
        max_size=settings.dispatch_concurrency + 2,
        server_settings={"application_name": "lifebox-dispatch", "timezone": "UTC"},
    )
    publisher = Publisher(endpoints.mqtt_url)
    await publisher.connect()
    dispatcher = Dispatcher(pool, publisher, settings)
    log.info("dispatcher running", extra={"dispatcher": dispatcher.name})
    tasks = [
        asyncio.create_task(dispatcher.listen_loop(endpoints.dsn, stop)),
        asyncio.create_task(dispatcher.sweep_loop(stop)),
        *(
            asyncio.create_task(dispatcher.claim_loop(stop))
            for _ in range(settings.dispatch_concurrency)
        ),
    ]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        publisher.close()
        await pool.close()


class RoleRefused(RuntimeError):
    """The dispatcher was given a database role it must not hold."""


def run_dispatcher(settings: Settings) -> int:
    problems = settings.production_problems("dispatch")
    if problems:
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
    server, _thread = start_http_server(settings.dispatch_metrics_port, addr=settings.http_host)
    log.info("metrics listening", extra={"port": server.server_port, "pid": os.getpid()})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_dispatch(settings, stop)

    try:
        asyncio.run(main())
    except RoleRefused as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    finally:
        server.shutdown()
    return 0
