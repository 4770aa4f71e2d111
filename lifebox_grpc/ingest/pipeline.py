"""One batch from received messages to committed rows, then acknowledgements.

Per batch: resolve devices from topics, decode telemetry natively (GIL released), then in one
transaction COPY the rows, store the rejects, alarms and acks. Only after COMMIT are the
messages acknowledged. A unique violation (a redelivery after a crash) redoes the batch
through a staging table with ON CONFLICT DO NOTHING; any other database error is retried
until the database is back, so nothing received is ever lost or acked early.

A topic is judged before anything is looked up (:mod:`topics`: the serial's grammar), and
rejects of messages that name no device are stored up to the worker's cap (:mod:`reject_cap`);
past it they are counted and summed up, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from lifebox_grpc import metrics
from lifebox_grpc.alarms.evaluator import AlarmEvaluator, batch_devices  # --- alarms (issue 15)
from lifebox_grpc.ingest.consumer import Received
from lifebox_grpc.ingest.devices import DeviceDirectory
from lifebox_grpc.ingest.facts import BatchFacts, device_spans
from lifebox_grpc.ingest.formulas import BatchFormulas, FormulaCache  # calculated metrics
from lifebox_grpc.ingest.messages import MessageError, decode_ack, decode_alarm
from lifebox_grpc.ingest.reject_cap import RejectCap
from lifebox_grpc.ingest.reporting import RateLimitedLog, WindowStats
from lifebox_grpc.ingest.topics import KEPT_TOPIC_CHARS, ParsedTopic, TopicKind, parse_topic
from lifebox_grpc.native import (
    COLUMN_TYPES,
    COLUMNS,
    POINT_COLUMN_TYPES,
    POINT_COLUMNS,
    DecodedBatch,
    Decoder,
)
from lifebox_grpc.presence.status import decode_status  # presence (issue 13)
from lifebox_grpc.serials import MAX_SERIAL
from lifebox_grpc.store import ingest as store
from lifebox_grpc.store import presence as presence_store  # presence (issue 13)
from lifebox_grpc.store.ingest import AckRow, AlarmRow, DeviceRef, RejectRow

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors after which the same batch is simply tried again once the database answers.
RETRYABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    # A COMMIT that meets a connection the server is dropping (seen in the outage test:
    # "cannot switch to state 15"); whether it committed, the retry (or its unique
    # violation, then the deduplicating path) settles.
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
# SQLSTATE classes a single bad message can cause: data exception, integrity violation.
MESSAGE_CAUSED = ("22", "23")


def _serial(item: Received) -> str:
    """The serial a message's topic names (as far as a reject stores it)."""
    return parse_topic(item.topic).serial


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


@dataclass
class PreparedBatch:
    """Everything a batch writes, computed once and reused by every retry."""

    messages: list[Received]
    decoded: DecodedBatch | None = None
    rejects: list[RejectRow] = field(default_factory=list)
    alarms: list[AlarmRow] = field(default_factory=list)
    acks: list[AckRow] = field(default_factory=list)
    telemetry: list[tuple[int, DeviceRef]] = field(default_factory=list)  # (batch index, ref)
    kinds: dict[TopicKind, int] = field(default_factory=dict)  # accepted messages by topic
    ack_rejects: list[RejectRow] = field(default_factory=list)  # acks no command matched
    unstored: list[RejectRow] = field(default_factory=list)  # past the cap: counted only
    # --- presence (issue 13) --- statuses, applied in the batch's transaction
    presence: list[presence_store.PresenceEvent] = field(default_factory=list)
    # --- calculated metrics (issue 17) --- the formulas its readings were evaluated with,
    # and the points the committing attempt inserted
    formulas: BatchFormulas | None = None
    points_written: int = 0


class Pipeline:
    """Turns batches of received messages into committed rows; acks through `ack`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        decoder: Decoder,
        directory: DeviceDirectory,
        ack: Callable[[list[Received]], int],
        raw_cap: int,
        facts_interval: float = 0.5,
        stop: asyncio.Event | None = None,
        cap: RejectCap | None = None,
        alarms: AlarmEvaluator | None = None,  # --- alarms (issue 15) ---
        formulas: FormulaCache | None = None,  # --- calculated metrics (issue 17) ---
    ) -> None:
        self.pool = pool
        self.decoder = decoder
        self.directory = directory
        self.ack = ack
        self.raw_cap = raw_cap
        self.reject_log = RateLimitedLog()
        self.stop = stop or asyncio.Event()
        self.cap = cap  # None: every reject is stored
        self.facts = BatchFacts(pool, facts_interval, (*RETRYABLE, asyncpg.PostgresError))
        self.stats = WindowStats()
        # --- alarms (issue 15): committed devices are evaluated after commit (alarms/) ---
        self.alarms = alarms
        # --- calculated metrics (issue 17): evaluated natively while a batch decodes ---
        self.formulas = formulas

    # -- preparation (no database writes) ----------------------------------------------------

    def _reject(
        self,
        batch: PreparedBatch,
        item: Received,
        code: str,
        reason: str,
        serial: str,
        client_id: uuid.UUID | None = None,
        reading_index: int | None = None,
    ) -> None:
        # A reject no tenant's device sent is stored while the worker's cap allows.
        stored = client_id is not None or self.cap is None or self.cap.admit(code)
        row = RejectRow(
            client_id=client_id,
            serial=serial[:MAX_SERIAL],
            topic=item.topic[:KEPT_TOPIC_CHARS],
            received_at=_utc(item.received_us),
            code=code,
            reason=reason,
            raw=item.payload[: self.raw_cap] if stored else b"",
            raw_truncated=len(item.payload) > self.raw_cap,
            reading_index=reading_index,
        )
        (batch.rejects if stored else batch.unstored).append(row)

    async def prepare(self, messages: list[Received]) -> PreparedBatch:
        batch = PreparedBatch(messages)
        parsed = [parse_topic(m.topic) for m in messages]
        # Only serials of valid grammar reach the cache and the database.
        serials = {p.serial for p in parsed if isinstance(p, ParsedTopic)}
        kinds: dict[TopicKind, int] = defaultdict(int)
        refs = (
            await self._retrying(lambda conn: self.directory.resolve(conn, serials))
            if serials
            else {}
        )
        for index, (item, topic) in enumerate(zip(messages, parsed, strict=True)):
            if not isinstance(topic, ParsedTopic):
                self._reject(batch, item, topic.code, topic.reason, topic.serial)
                continue
            ref = refs.get(topic.serial)
            if ref is None:
                self._reject(
                    batch, item, "unknown_device", "no device has this serial", topic.serial
                )
                continue
            if not ref.accepts_data:
                code = "client_suspended" if ref.client_status != "active" else "device_disabled"
                self._reject(
                    batch,
                    item,
                    code,
                    f"device is {ref.status}, client is {ref.client_status}",
                    topic.serial,
                    ref.client_id,
                )
                continue
            kinds[topic.kind] += 1
            try:
                if topic.kind is TopicKind.TELEMETRY:
                    batch.telemetry.append((index, ref))
                elif topic.kind is TopicKind.ALARM:
                    alarm = decode_alarm(item.payload, _utc(item.received_us))
                    batch.alarms.append(AlarmRow(ref.client_id, ref.device_id, **alarm.__dict__))
                elif topic.kind is TopicKind.STATUS:  # --- presence (issue 13) ---
                    status = decode_status(item.payload)
                    batch.presence.append(
                        status.event(ref.client_id, ref.device_id, _utc(item.received_us), "status")
                    )
                else:
                    assert topic.command_id is not None
                    ack = decode_ack(item.payload)
                    batch.acks.append(
                        AckRow(
                            index, ref.client_id, ref.device_id, topic.command_id, **ack.__dict__
                        )
                    )
            except MessageError as exc:
                self._reject(batch, item, exc.code, exc.reason, topic.serial, ref.client_id)
            except Exception as exc:  # a decoder bug must cost one message, not the worker
                log.exception("unexpected error decoding a message")
                self._reject(
                    batch, item, "internal_error", f"could not decode: {type(exc).__name__}",
                    topic.serial, ref.client_id,
                )  # fmt: skip
        batch.kinds = kinds
        if batch.telemetry:
            inputs = [
                (ref.device_id, ref.client_id, messages[i].received_us, messages[i].payload)
                for i, ref in batch.telemetry
            ]
            # Called inline: the native decoder releases the GIL, so the paho thread keeps
            # receiving meanwhile, and a batch decodes in about a millisecond. A thread pool
            # would only add two GIL hand-offs per batch (measured: slower).
            # Formulas (issue 17) are read per batch (a version check) and evaluated in the
            # same native call, on the accepted readings only.
            cache = self.formulas
            if cache is not None:
                clients = {ref.client_id for _, ref in batch.telemetry}
                batch.formulas = await self._retrying(lambda conn: cache.for_clients(conn, clients))
            if batch.formulas is None:
                batch.decoded = self.decoder.decode(inputs)
            else:
                batch.decoded = self.decoder.decode(
                    inputs,
                    formulas=batch.formulas.native,
                    device_types=[ref.device_type for _, ref in batch.telemetry],
                )
            for reject in batch.decoded.rejects:
                index, ref = batch.telemetry[reject.message_index]
                item = messages[index]
                serial = _serial(item)
                self._reject(
                    batch,
                    item,
                    reject.code,
                    reject.reason,
                    serial,
                    ref.client_id,
                    reject.reading_index,
                )
        return batch

    # -- the transaction ---------------------------------------------------------------------

    async def _write(
        self, conn: asyncpg.Connection, batch: PreparedBatch, dedupe: bool
    ) -> tuple[int, int | None]:
        """Rows inserted, and the transaction id that inserted them (None without rows).

        The transaction is top level (pooled connections are idle) and the rows are written
        without a savepoint, so their ``xmin`` is that id: live streams find exactly this
        commit's rows by it (:mod:`lifebox_grpc.store.telemetry_notices`).
        """
        rows, xid = 0, None
        async with conn.transaction():
            decoded = batch.decoded
            if decoded is not None and decoded.rows:
                if dedupe:
                    rows = await store.copy_telemetry_deduplicated(
                        conn, decoded.copy_data, COLUMN_TYPES
                    )
                else:
                    await store.copy_telemetry(conn, decoded.copy_data, COLUMNS)
                    rows = decoded.rows
                # Calculated points (issue 17): with their readings, exactly once.
                batch.points_written = 0
                if decoded.points:
                    if dedupe:
                        batch.points_written = await store.copy_points_deduplicated(
                            conn, decoded.points_copy_data, POINT_COLUMN_TYPES
                        )
                    else:
                        await store.copy_points(conn, decoded.points_copy_data, POINT_COLUMNS)
                        batch.points_written = decoded.points
                # The commit announcement, delivered at COMMIT (issue 18).
                xid = await store.announce_commit(
                    conn,
                    device_spans(decoded, [(r.device_id, r.client_id) for _, r in batch.telemetry]),
                )
            await store.insert_alarms(conn, batch.alarms)
            await presence_store.apply_events(conn, batch.presence)  # presence (issue 13)
            # --- commands (issue 14): a batch's acks in one round trip ---
            stale: list[AckRow] = await store.apply_acks(conn, batch.acks)
            batch.ack_rejects = []
            for ack in stale:
                item = batch.messages[ack.index]
                batch.ack_rejects.append(
                    RejectRow(
                        ack.client_id,
                        _serial(item),
                        item.topic,
                        _utc(item.received_us),
                        "unknown_command",
                        "no unfinished command with this id for this device",
                        item.payload[: self.raw_cap],
                        len(item.payload) > self.raw_cap,
                        None,
                    )
                )
            await store.insert_rejects(conn, [*batch.rejects, *batch.ack_rejects])
        return rows, xid

    async def _retrying(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection until it succeeds or fails for good.

        Only errors one message can cause (SQLSTATE classes 22, data exception, and 23,
        integrity violation) are raised, as BatchRefusedError; a unique violation is raised
        as is (the redelivery path). Anything else (the database restarting or full, a
        timeout, a missing grant while a deployment rolls out) is waited out with backoff:
        turning good readings into rejects would lose them. Shutdown interrupts the wait
        (ShutdownError); the batch then stays un-acked for redelivery.
        """
        delay = 0.1
        while True:
            if self.stop.is_set():
                raise ShutdownError
            try:
                async with self.pool.acquire() as conn:
                    return await work(conn)
            except asyncpg.UniqueViolationError:
                raise
            except asyncpg.PostgresError as exc:
                if (exc.sqlstate or "")[:2] in MESSAGE_CAUSED:
                    raise BatchRefusedError(exc) from exc
                self._wait_log(exc, delay)
            except RETRYABLE as exc:
                self._wait_log(exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            delay = min(delay * 2, 2.0)

    @staticmethod
    def _wait_log(exc: BaseException, delay: float) -> None:
        metrics.INGEST_DB_RETRIES.labels(type(exc).__name__).inc()
        log.warning(
            "database unavailable; retrying",
            extra={
                "error": type(exc).__name__,
                "sqlstate": getattr(exc, "sqlstate", None),
                "retry_in_s": delay,
            },
        )

    async def commit(self, batch: PreparedBatch) -> tuple[int, int | None]:
        """Write the batch, retrying until it commits; return the telemetry rows inserted and
        the id of the transaction that inserted them."""
        if not (
            batch.rejects
            or batch.alarms
            or batch.acks
            or batch.presence  # presence (issue 13)
            or (batch.decoded and batch.decoded.rows)
        ):
            return 0, None  # nothing to write (e.g. only rejects past the cap): no round trip
        try:
            return await self._retrying(lambda conn: self._write(conn, batch, False))
        except asyncpg.UniqueViolationError:
            # A redelivery after a crash: some rows are already there. Only this batch pays
            # for deduplication.
            metrics.INGEST_BATCHES.labels("deduplicated").inc()
            return await self._retrying(lambda conn: self._write(conn, batch, True))

    # -- after commit ------------------------------------------------------------------------

    async def process(self, messages: list[Received]) -> None:
        started = time.monotonic()
        batch = await self.prepare(messages)
        try:
            rows, xid = await self.commit(batch)
        except BatchRefusedError as refused:
            # The database refused something in this batch for a reason retrying won't fix.
            # Halve until the culprit is one message, which becomes a stored reject: the
            # rest of the batch still commits.
            if len(messages) > 1:
                middle = len(messages) // 2
                await self.process(messages[:middle])
                await self.process(messages[middle:])
                return
            await self._refuse(messages[0], refused.cause)
            return
        committed_us = time.time_ns() // 1000
        self.ack(messages)
        self._count(batch)
        metrics.INGEST_ROWS.inc(rows)
        metrics.INGEST_BATCHES.labels("copy").inc()
        metrics.INGEST_BATCH_SECONDS.observe(time.monotonic() - started)
        if batch.decoded is not None:
            self.stats.observe(rows, batch.decoded.row_times_us, committed_us)
        if batch.decoded is not None and batch.decoded.rows and xid is not None:
            self.facts.add(
                batch.decoded,
                [(ref.device_id, ref.client_id) for _, ref in batch.telemetry],
                _utc(committed_us),
            )
            # --- alarms (issue 15) ---
            if self.alarms is not None:
                self.alarms.note(
                    batch_devices(
                        batch.decoded.row_times_us,
                        batch.decoded.rows_per_message,
                        [(ref.device_id, ref.client_id) for _, ref in batch.telemetry],
                    )
                )

    def _count(self, batch: PreparedBatch) -> None:
        """Metrics and reject log lines of a committed batch (once, whatever the retries)."""
        for kind, count in batch.kinds.items():
            metrics.INGEST_MESSAGES.labels(kind.value).inc(count)
        if batch.decoded is not None:  # calculated metrics (issue 17)
            metrics.INGEST_POINTS.inc(batch.points_written)
            for _formula, code, count in batch.decoded.skipped_points:
                metrics.INGEST_POINTS_SKIPPED.labels(code).inc(count)
        for row in (*batch.rejects, *batch.ack_rejects, *batch.unstored):
            metrics.INGEST_REJECTS.labels(row.code).inc()
            self.reject_log.reject(row)
        if self.cap is not None and batch.unstored:
            self.cap.tally(Counter(row.code for row in batch.unstored))

    async def _refuse(self, item: Received, cause: asyncpg.PostgresError) -> None:
        log.error(
            "database refused a message",
            extra={"sqlstate": cause.sqlstate, "error": type(cause).__name__},
        )
        batch = PreparedBatch([item])
        self._reject(
            batch,
            item,
            "db_refused",
            f"database refused the message (SQLSTATE {cause.sqlstate})",
            _serial(item),
        )
        try:
            await self.commit(batch)
        except BatchRefusedError:
            # Not even its reject can be stored: leave it un-acked rather than lose it.
            log.error("could not store the reject of a refused message; not acknowledged")
            return
        self.ack([item])
        self._count(batch)


class ShutdownError(Exception):
    """The worker is stopping while it waits for the database; nothing was acked."""


class BatchRefusedError(Exception):
    """The database rejected a batch with a non-transient error."""

    def __init__(self, cause: asyncpg.PostgresError) -> None:
        super().__init__(str(cause))
        self.cause = cause
