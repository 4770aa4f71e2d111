"""The reaction worker: claims due jobs of the outbox and runs them, at least once.

A claim is one short transaction (FOR UPDATE SKIP LOCKED) that counts the attempt and moves
the job's due time a lease ahead; the delivery happens outside any transaction; its outcome
is recorded, and the job finished or rescheduled, in the next. A worker killed between the
two leaves the job due again when its lease ends: a webhook or an e-mail is then sent again
with the same delivery id. A command reaction creates its command and finishes its job in
one transaction (and its idempotency key is the delivery id), so it is created exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from prometheus_client import Counter, Gauge

from lifebox_grpc.alarms.reactions.mail import MailSender, alarm_mail
from lifebox_grpc.alarms.reactions.owner import owner_may_command, owner_principal
from lifebox_grpc.alarms.reactions.signing import webhook_body, webhook_headers
from lifebox_grpc.alarms.reactions.targets import GuardedResolver, TargetRefused, url_problem
from lifebox_grpc.commands.create import Requester, create_command
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.errors import DomainError
from lifebox_grpc.store import alarm_reactions as store
from lifebox_grpc.store import command_templates as template_store
from lifebox_grpc.store.pool import savepoint, tenant_transaction

log = logging.getLogger(__name__)

CHANNEL = "lifebox_alarm_reactions"
OUTCOMES = Counter(
    "lifebox_alarm_reaction_outcomes_total", "Reaction attempts by kind and outcome",
    ["kind", "outcome"],
)  # fmt: skip
CLAIMED = Counter("lifebox_alarm_reaction_jobs_claimed_total", "Reaction jobs claimed")
UP = Gauge("lifebox_alarm_reactions_up", "1 while the reaction worker runs")


class Retry(Exception):
    """The delivery failed in a way worth trying again (the message is the reason)."""


class Refused(Exception):
    """The delivery must not be attempted (the message is the reason): skipped."""


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from the base, capped."""
    return float(
        min(settings.reactions_backoff_seconds * 2 ** (attempt - 1),
            settings.reactions_backoff_max_seconds)
    )  # fmt: skip


def http_session(settings: Settings) -> aiohttp.ClientSession:
    """The webhook client: in prod mode only public addresses are connected to."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver() if settings.mode is Mode.PROD else None
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.reactions_webhook_timeout_seconds),
    )


class ReactionWorker:
    """Claim-and-run passes of one process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        session: aiohttp.ClientSession,
        mail: MailSender,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.session = session
        self.mail = mail
        self.wake = asyncio.Event()

    async def run_once(self) -> int:
        """One claim: run what is due; the number of jobs claimed."""
        settings = self.settings
        async with self.pool.acquire() as conn, tenant_transaction(conn, None, staff=True):
            jobs = await store.claim_jobs(
                conn, settings.reactions_batch_size, settings.reactions_lease_seconds
            )
        CLAIMED.inc(len(jobs))
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def _run(self, job: store.Job) -> None:
        try:
            if job.attempt > self.settings.reactions_max_attempts:
                # Claimed that often without an outcome: its workers died or crashed on it.
                async with self.pool.acquire() as conn, tenant_transaction(conn, job.client_id):
                    await self._finish(
                        conn, job, "failed", f"no outcome after {job.attempt - 1} attempts"
                    )
            elif job.kind == "command":
                await self._command(job)
            else:
                await self._deliver(job)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The lease runs out and the job is due again.
            log.warning(
                "reaction job interrupted", extra={"job": str(job.id), "error": type(exc).__name__}
            )
        except Exception:
            # A bug must not stop the other jobs or the claim loop; the job is due again when
            # its lease ends (its attempts are counted, so it ends failed, not looping).
            log.exception("reaction job crashed", extra={"job": str(job.id)})

    async def _command(self, job: store.Job) -> None:
        async with self.pool.acquire() as conn, tenant_transaction(conn, job.client_id):
            owner = await owner_principal(conn, job.rule_owner, job.client_id)
            template = (
                await template_store.get_template(conn, job.command_template_id, job.client_id)
                if job.command_template_id
                else None
            )
            reason = None
            if owner is None:
                reason = "owner_missing: the rule's owner no longer exists or is disabled"
            elif template is None:
                reason = "template_missing"
            else:
                why = await owner_may_command(conn, owner, template, job.device_id)
                if why is not None:
                    reason = f"owner_missing: the rule's owner may no longer: {why}"
            if reason is not None or template is None:
                await self._finish(conn, job, "skipped", reason or "template_missing")
                return
            try:
                async with savepoint(conn):
                    created = await create_command(
                        conn,
                        client_id=job.client_id,
                        device_id=job.device_id,
                        template=template,
                        parameters=job.parameters,
                        requester=Requester.rule(
                            job.rule_id, alarm_event_id=str(job.event_id),
                            alarm_reaction_id=str(job.reaction_id),
                        ),
                        idempotency_key=f"alarm-reaction:{job.id}",
                    )  # fmt: skip
            except DomainError as exc:
                # The device cannot receive, the parameters no longer fit the template...:
                # trying again would give the same answer.
                await self._finish(conn, job, "failed", exc.message)
                return
            await self._finish(conn, job, "sent", command_id=created.command.id)

    async def _deliver(self, job: store.Job) -> None:
        event = job.event  # read with the claim, like the rule's secret
        try:
            if job.kind == "webhook":
                await self._post(job, event, job.secret)
            else:
                try:
                    await self.mail.send(alarm_mail(job, event))
                except OSError as exc:
                    raise Retry(f"mail: {type(exc).__name__}") from exc
        except Refused as exc:
            async with self.pool.acquire() as conn, tenant_transaction(conn, job.client_id):
                await self._finish(conn, job, "skipped", str(exc))
            return
        except Retry as exc:
            await self._failed(job, str(exc))
            return
        async with self.pool.acquire() as conn, tenant_transaction(conn, job.client_id):
            if job.kind == "webhook":
                await store.webhook_succeeded(conn, job)
            await self._finish(conn, job, "sent")

    async def _post(self, job: store.Job, event: store.EventView, secret: bytes | None) -> None:
        url = job.webhook_url or ""
        problem = url_problem(url, prod=self.settings.mode is Mode.PROD)
        if problem is not None:
            raise Refused(f"target_refused: the URL {problem}")
        if secret is None:
            raise Refused("no_secret: the rule has no webhook secret")
        sent_at = datetime.now(UTC)
        body = webhook_body(job, event, sent_at)
        headers = webhook_headers(job, secret, body, sent_at)
        try:
            async with self.session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except TargetRefused as exc:
            raise Refused(f"target_refused: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.__cause__, TargetRefused) or isinstance(
                getattr(exc, "os_error", None), TargetRefused
            ):
                raise Refused(f"target_refused: {exc.__cause__}") from exc
            raise Retry(f"connection failed: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise Retry("timed out") from exc
        except aiohttp.ClientError as exc:
            raise Retry(f"request failed: {type(exc).__name__}") from exc
        if not 200 <= status < 300:
            raise Retry(f"HTTP {status}")

    async def _failed(self, job: store.Job, reason: str) -> None:
        settings = self.settings
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, tenant_transaction(conn, job.client_id):
            if job.kind == "webhook":
                retry_at = now + timedelta(minutes=settings.reactions_failing_retry_minutes)
                if await store.webhook_failed(
                    conn, job, settings.reactions_failing_after, retry_at
                ):
                    reason += "; endpoint failing"
            if job.attempt >= settings.reactions_max_attempts:
                await self._finish(conn, job, "failed", f"{reason} (attempt {job.attempt}, last)")
                return
            await store.record_outcome(conn, job, "retried", reason)
            OUTCOMES.labels(job.kind, "retried").inc()
            await store.reschedule_job(
                conn, job.id, now + timedelta(seconds=backoff(settings, job.attempt))
            )

    async def _finish(
        self,
        conn: asyncpg.Connection,
        job: store.Job,
        outcome: str,
        reason: str = "",
        *,
        command_id: uuid.UUID | None = None,
    ) -> None:
        await store.record_outcome(conn, job, outcome, reason, command_id=command_id)
        await store.finish_job(conn, job.id)
        OUTCOMES.labels(job.kind, outcome).inc()

    async def claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claimed = await self.run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("reaction pass failed; retrying", extra={"error": str(exc)})
                await _sleep(stop, 1.0)
                continue
            if claimed >= self.settings.reactions_batch_size:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    _first(stop, self.wake), self.settings.reactions_poll_seconds
                )

    async def listen_loop(self, dsn: str, stop: asyncio.Event) -> None:
        """Wake the claim loop on every NOTIFY of the trigger; reconnect when it drops."""
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("reactions LISTEN connect failed", extra={"error": str(exc)})
                await _sleep(stop, 1.0)
                continue
            try:
                await conn.add_listener(CHANNEL, lambda *_: self.wake.set())
                self.wake.set()
                while not stop.is_set() and not conn.is_closed():
                    await _sleep(stop, 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
