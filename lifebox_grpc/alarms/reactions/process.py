"""`lifebox reactions`: runs alarm reactions (commands, webhooks, e-mails) from their outbox.

A process of its own, not part of `serve`, `ingest` or `dispatch`: it makes outbound HTTP
requests to tenants' URLs, so it listens on nothing but its metrics port and holds no
broker credential (prod mode refuses any credential but the database's); any number may run
(claims are FOR UPDATE SKIP LOCKED) and the crash tests kill exactly it. Its database role
is the application role (LIFEBOX_DATABASE_URL): a command reaction takes SendCommand's own
authorisation path (the owner's principal, device scope, command grants) and creation path,
which read and write what that role holds; a narrower role is left for later (README).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import asyncpg
from prometheus_client import start_http_server

from lifebox_grpc.alarms.reactions.mail import mail_sender_from_settings
from lifebox_grpc.alarms.reactions.worker import UP, ReactionWorker, http_session
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    dsn = resolve_endpoints(settings).app_dsn
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=4,
        server_settings={"application_name": "lifebox-reactions", "timezone": "UTC"},
    )
    session = http_session(settings)
    worker = ReactionWorker(pool, settings, session, mail_sender_from_settings(settings))
    tasks = [
        asyncio.create_task(worker.listen_loop(dsn, stop)),
        asyncio.create_task(worker.claim_loop(stop)),
    ]
    UP.set(1)
    log.info("reaction worker running", extra={"pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        UP.set(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
        await pool.close()


def run_reactions(settings: Settings) -> int:
    problems = settings.production_problems("reactions")
    if problems:
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
    server, _thread = start_http_server(settings.reactions_metrics_port, addr=settings.http_host)
    log.info("metrics listening", extra={"port": server.server_port})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
    return 0
