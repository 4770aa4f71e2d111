"""`lifebox ingest`: one MQTT ingest worker process.

The paho thread fills the pending batch; this asyncio loop flushes it at
``ingest_batch_readings`` messages, at half the Receive Maximum (the broker sends no more
un-acked messages than that, so a larger batch could only ever flush on its timer), at
``ingest_batch_bytes`` of payload (big multi-reading messages: bounds memory and latency), or
``ingest_batch_ms`` after its first message, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from prometheus_client import start_http_server

from lifebox_grpc.alarms.evaluator import AlarmEvaluator  # --- alarms (issue 15)
from lifebox_grpc.alarms.sweeper import sweep_forever  # --- alarms (issue 15)
from lifebox_grpc.broker.drops import report_drops
from lifebox_grpc.config import Settings
from lifebox_grpc.ingest.consumer import MqttConsumer
from lifebox_grpc.ingest.devices import DeviceDirectory, follow_device_changes
from lifebox_grpc.ingest.formulas import FormulaCache  # calculated metrics (issue 17)
from lifebox_grpc.ingest.pipeline import Pipeline, ShutdownError
from lifebox_grpc.ingest.reject_cap import RejectCap
from lifebox_grpc.native import DecodeLimits, Decoder
from lifebox_grpc.presence.sweeper import keep_presence, retained_reader  # presence (issue 13)
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.store.pool import create_pool
from lifebox_grpc.store.role_checks import checked_role

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_payload_bytes=settings.ingest_max_payload_bytes,
        max_readings_per_message=settings.ingest_max_readings_per_message,
        max_extra_keys=settings.ingest_max_extra_keys,
        max_depth=settings.ingest_max_depth,
        max_string_bytes=settings.ingest_max_string_bytes,
        max_past_seconds=settings.ingest_max_past_days * 86400,
        max_future_seconds=settings.ingest_max_future_seconds,
    )


def client_id(settings: Settings) -> str:
    """Stable per worker, so a restarted worker resumes its persistent session."""
    return settings.ingest_client_id or f"lifebox-ingest-{socket.gethostname()}"


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(callback)


async def run_ingest(settings: Settings, stop: asyncio.Event) -> None:
    endpoints = resolve_endpoints(settings)
    loop = asyncio.get_running_loop()
    # No session reset between uses: ingest keeps no session state but the staging temp
    # table of the redelivery path, which is meant to outlive a batch.
    pool = await create_pool(endpoints.ingest_dsn, settings, "lifebox-ingest", session_state=False)
    await checked_role(pool, "ingest")
    directory = DeviceDirectory(max_unknown=settings.ingest_unknown_serial_cache_size)
    listener = asyncio.create_task(follow_device_changes(endpoints.ingest_dsn, directory, stop))
    wake = asyncio.Event()
    flush_at = max(1, min(settings.ingest_batch_readings, settings.ingest_receive_maximum // 2))
    consumer = MqttConsumer(
        endpoints.mqtt_url,
        client_id(settings),
        receive_maximum=settings.ingest_receive_maximum,
        session_expiry_s=SESSION_EXPIRY_S,
        wake=lambda: _call_soon(loop, wake.set),
        wake_at=flush_at,
        wake_at_bytes=settings.ingest_batch_bytes,
    )
    cap = RejectCap(
        settings.ingest_unknown_rejects_per_interval,
        settings.ingest_unknown_rejects_interval_s,
        client_id(settings),
    )
    # --- alarms (issue 15): evaluation after commit, and the sweeper under its lease ---
    alarms = (
        AlarmEvaluator(
            pool,
            grace_s=settings.alarm_grace_ms / 1000,
            rules_ttl_s=settings.alarm_rules_ttl_ms / 1000,
            budget_us=settings.alarm_budget_ms * 1000,
            lateness_s=settings.alarm_lateness_s,  # --- alarms-eval (issue 15) ---
        )
        if settings.alarm_evaluation
        else None
    )
    pipeline = Pipeline(
        pool,
        Decoder(decode_limits(settings)),
        directory,
        consumer.ack,
        settings.ingest_reject_raw_cap,
        settings.ingest_facts_interval_ms / 1000,
        stop,
        cap,
        alarms,  # --- alarms (issue 15)
        FormulaCache(settings.formula_budget_ms * 1000) if settings.formulas_enabled else None,
    )
    facts_stop = asyncio.Event()  # set once the last batch is in: its facts still get written
    facts = asyncio.create_task(pipeline.facts.run(facts_stop))
    summaries = asyncio.create_task(cap.run(pool, pipeline.facts.errors, facts_stop))
    # --- alarms (issue 15) ---
    alarm_tasks = (
        [
            asyncio.create_task(alarms.run(facts_stop)),
            asyncio.create_task(
                sweep_forever(pool, alarms, settings.alarm_sweep_interval_s, facts_stop)
            ),
        ]
        if alarms is not None
        else []
    )
    # --- presence (issue 13) --- the worker holding the lease sweeps stale devices (after
    # reading the retained statuses once); the others wait for the lease.
    presence = asyncio.create_task(
        keep_presence(
            endpoints.ingest_dsn,
            stop,
            interval_s=settings.presence_sweep_interval_seconds,
            retained=retained_reader(endpoints.mqtt_url, settings.presence_retained_quiet_seconds),
        )
    )
    drops = asyncio.create_task(report_drops(endpoints.mqtt_url, stop))
    consumer.start()
    log.info("ingest started", extra={"client_id": client_id(settings), "flush_at": flush_at})
    backlog = False  # messages left over by the last take: they have waited long enough
    slots = asyncio.Semaphore(settings.ingest_commit_concurrency)
    committing: set[asyncio.Task[None]] = set()

    def release(done: asyncio.Task[None]) -> None:
        committing.discard(done)
        slots.release()

    try:
        while not stop.is_set():
            if not consumer.pending:
                wake.clear()
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(wake.wait())
                await asyncio.wait({stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
                continue
            # A batch has started: give it until the deadline or the size threshold.
            wake.clear()
            if not consumer.full and not backlog:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), settings.ingest_batch_ms / 1000)
            batch = consumer.take()
            backlog = consumer.pending > 0
            if batch:
                # Up to `ingest_commit_concurrency` batches commit at once, each on its own
                # connection, so one batch's COPY overlaps another's COMMIT (fsync). Acks
                # still follow each batch's own commit; MQTT allows them out of order.
                await slots.acquire()
                task = asyncio.create_task(pipeline.process(batch))
                committing.add(task)
                task.add_done_callback(release)
            for task in [t for t in committing if t.done()]:
                task.result()  # a failure other than shutdown stops the worker, as before
    except ShutdownError:
        pass
    finally:
        # Let batches already committing finish (or give up on shutdown) before the pool goes.
        await asyncio.gather(*committing, return_exceptions=True)
        # In-flight messages that were not committed stay un-acked: the broker keeps them
        # for this session and delivers them again.
        consumer.stop()
        facts_stop.set()
        await facts
        await summaries
        await asyncio.gather(*alarm_tasks)  # --- alarms (issue 15)
        stop.set()
        await listener
        await presence  # presence (issue 13)
        await drops
        await pool.close()


def run_worker(settings: Settings) -> int:
    problems = settings.production_problems("ingest")
    if problems:
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
    server, _thread = start_http_server(settings.ingest_metrics_port, addr=settings.http_host)
    log.info("metrics listening", extra={"port": server.server_port, "pid": os.getpid()})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_ingest(settings, stop)

    asyncio.run(main())
    server.shutdown()
    return 0
