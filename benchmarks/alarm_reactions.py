"""The cost of alarm reactions, in one run, one table. Asserts nothing.

    nice .venv/bin/python benchmarks/alarm_reactions.py [--events 2000] [--jobs 1000] [--repeat 2]

A fresh PostgreSQL cluster (the test suite's launcher):

(1) the enqueue trigger on the evaluation's commit path: raising events (alarm_events rows
    and their 'raised' changes, 100 per transaction in one statement each, as the evaluator
    writes a batch) with the
    trigger disabled (the baseline), enabled for rules without reactions, and enabled for
    rules with two webhook reactions each (two jobs enqueued per raise); events/s, alternated
    ``--repeat`` times
(2) the worker: ``--jobs`` webhook jobs delivered by one in-process ReactionWorker (claim,
    sign, POST to a local aiohttp receiver answering 200, record, finish) in deliveries/s,
    beside the floor: the same signed POSTs sent straight from one aiohttp session at the same
    concurrency (the batch size), nothing recorded
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifebox_grpc.alarms.reactions.mail import OutboxMailSender
from lifebox_grpc.alarms.reactions.signing import webhook_body, webhook_headers
from lifebox_grpc.alarms.reactions.worker import ReactionWorker, http_session
from lifebox_grpc.config import Settings
from lifebox_grpc.store import alarm_reactions as store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarm_reactions import webhook_receiver
from tests.helpers.services import running_database

BATCH = 100


def say(line: str) -> None:
    print(line, flush=True)


async def make_rules(conn: asyncpg.Connection, client: uuid.UUID, device: uuid.UUID, n: int,
                     webhooks: int, url: str) -> list[uuid.UUID]:  # fmt: skip
    async with tenant_transaction(conn, None, staff=True):
        rules = [
            await conn.fetchval(
                "INSERT INTO alarm_rules (client_id, name, kind, device_id, field, condition, "
                "threshold_high) VALUES ($1, $2, 'threshold', $3, 'temperature_c', 'gt', 30) "
                "RETURNING id",
                client, f"r{i}-{uuid.uuid4().hex[:6]}", device,
            )
            for i in range(n)
        ]  # fmt: skip
        for rule in rules:
            for _ in range(webhooks):
                await conn.execute(
                    "INSERT INTO alarm_reactions (client_id, rule_id, kind, webhook_url) "
                    "VALUES ($1, $2, 'webhook', $3)",
                    client, rule, url,
                )  # fmt: skip
            if webhooks:
                await conn.execute(
                    "INSERT INTO alarm_rule_webhook_secrets (rule_id, client_id, secret) "
                    "VALUES ($1, $2, $3)",
                    rule, client, secrets.token_bytes(32),
                )  # fmt: skip
    return rules


async def raise_events(conn: asyncpg.Connection, client: uuid.UUID, device: uuid.UUID,
                       rules: list[uuid.UUID], count: int) -> float:  # fmt: skip
    """Raise ``count`` events over ``rules``, 100 per transaction with one statement for the
    events and one for their changes, as the evaluator writes a batch (each event is stored
    cleared, so a rule has no open event in the way); events/s."""
    start = time.perf_counter()
    base = datetime.now(UTC) - timedelta(days=1)
    for first in range(0, count, BATCH):
        indexes = range(first, min(first + BATCH, count))
        ids = [uuid.uuid4() for _ in indexes]
        owners = [rules[i % len(rules)] for i in indexes]
        times = [base + timedelta(milliseconds=i) for i in indexes]
        async with tenant_transaction(conn, None, staff=True):
            await conn.execute(
                "INSERT INTO alarm_events (id, client_id, rule_id, device_id, severity, "
                "raised_at, trigger_value, status, cleared_at) SELECT e.id, $1, e.rule_id, $2, "
                "'major', e.at, 31, 'cleared_unack', e.at "
                "FROM unnest($3::uuid[], $4::uuid[], $5::timestamptz[]) e(id, rule_id, at)",
                client, device, ids, owners, times,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, "
                "change, status, changed_at) SELECT $1, e.id, e.rule_id, $2, 'raised', "
                "'active_unack', e.at "
                "FROM unnest($3::uuid[], $4::uuid[], $5::timestamptz[]) e(id, rule_id, at)",
                client, device, ids, owners, times,
            )  # fmt: skip
    return count / (time.perf_counter() - start)


async def trigger_cost(dsn: str, events: int, repeat: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        client = await factories.make_client(conn)
        device, _ = await factories.make_device(conn, client)
        plain = await make_rules(conn, client, device, 50, 0, "")
        reacting = await make_rules(conn, client, device, 50, 2, "http://127.0.0.1:9/")
        runs: dict[str, list[float]] = {"off": [], "no reactions": [], "2 webhooks": []}
        for _ in range(repeat):
            await conn.execute(
                "ALTER TABLE alarm_event_changes DISABLE TRIGGER alarm_event_changes_reactions"
            )
            runs["off"].append(await raise_events(conn, client, device, plain, events))
            await conn.execute(
                "ALTER TABLE alarm_event_changes ENABLE TRIGGER alarm_event_changes_reactions"
            )
            runs["no reactions"].append(await raise_events(conn, client, device, plain, events))
            runs["2 webhooks"].append(await raise_events(conn, client, device, reacting, events))
        async with tenant_transaction(conn, None, staff=True):
            await conn.execute("DELETE FROM alarm_reaction_jobs")  # not part of (2)
        base = max(runs["off"])
        say(f"(1) raising {events} events, 100 per transaction (best of {repeat}):")
        for name, values in runs.items():
            best = max(values)
            say(f"    trigger {name:<14} {best:9.0f} events/s  ({best / base - 1:+.1%} vs off)")
    finally:
        await conn.close()


async def worker_throughput(dsn: str, app_dsn: str, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="lifebox-bench-")))
    try:
        async with webhook_receiver() as receiver:
            client = await factories.make_client(conn)
            device, _ = await factories.make_device(conn, client)
            rules = await make_rules(conn, client, device, 50, 1, receiver.url)
            await raise_events(conn, client, device, rules, jobs)
            pool = await asyncpg.create_pool(app_dsn, min_size=2, max_size=4)
            session = http_session(settings)
            worker = ReactionWorker(pool, settings, session, OutboxMailSender(settings.home))
            start = time.perf_counter()
            while await worker.run_once():
                pass
            elapsed = time.perf_counter() - start
            delivered = len(receiver.received)
            # The floor: the same signed POSTs, straight, in batches of the claim size.
            async with pool.acquire() as c, tenant_transaction(c, None, staff=True):
                await c.execute("UPDATE alarm_reaction_jobs SET due_at = now(), done_at = NULL")
                claimed = await store.claim_jobs(c, jobs, 60)
            secret = secrets.token_bytes(32)
            floor_start = time.perf_counter()
            async with aiohttp.ClientSession() as direct:

                async def post(job: store.Job) -> None:
                    now = datetime.now(UTC)
                    body = webhook_body(job, job.event, now)
                    async with direct.post(
                        job.webhook_url or "", data=body,
                        headers=webhook_headers(job, secret, body, now),
                    ) as response:  # fmt: skip
                        await response.read()

                size = settings.reactions_batch_size
                for first in range(0, len(claimed), size):
                    await asyncio.gather(*(post(j) for j in claimed[first : first + size]))
            floor = len(claimed) / (time.perf_counter() - floor_start)
            await session.close()
            await pool.close()
        say(f"(2) {delivered} webhook jobs, batch {settings.reactions_batch_size}:")
        say(f"    worker (claim, sign, POST, record) {delivered / elapsed:9.0f} deliveries/s")
        say(f"    floor (signed POSTs only)          {floor:9.0f} POSTs/s")
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(running_database())
        say(f"PostgreSQL {db.server.port}, pid {os.getpid()}")
        await trigger_cost(db.owner_dsn, args.events, args.repeat)
        await worker_throughput(db.owner_dsn, db.app_dsn, args.jobs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
