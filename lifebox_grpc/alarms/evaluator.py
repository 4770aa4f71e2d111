"""Ingest's alarm evaluation: committed readings through the tenant's rules, per device in
reading-time order, exactly once whatever the workers and restarts.

Where it runs, and why after commit: an ingest transaction commits a batch and is acked at
once; evaluation then reads the device's readings *from the table* after its durable
watermark, under that watermark row's lock, and commits events, rule states and the new
watermark together. So

- only committed readings are evaluated (never a rejected one), and one evaluation sees the
  readings of every worker (two workers holding consecutive readings of one device evaluate
  them once, in time order, whichever gets the lock);
- a crash anywhere loses nothing and doubles nothing: before the evaluation commits, nothing
  of it exists and the next one starts from the same watermark over the same rows; the
  sweeper finds devices whose readings are past their watermark (a worker killed between
  its commit and the evaluation) and evaluates them;
- readings are not held back by alarm work: evaluation is off the commit path.

A device is evaluated ``grace`` after a commit noted it, so that a reading another worker
(or a concurrent batch of this one) received earlier but committed a little later is
already in the table, and the device is evaluated in reading-time order as one worker that
never stopped would.

Late readings. Readings committed within the lateness window (``lateness_s``, default 60 s)
of their reading time are evaluated in time order by every kind. Older ones are late: they
are evaluated by threshold, range and expression rules without a duration or dwell (on
arrival, against the rule's current state) and skipped by duration, dwell and rate rules
(unknown to them: they change nothing), counted in ``lifebox_alarm_late_readings_total``
and the cursor's ``late_readings``, and an event one raises or clears says so in its
details (``late``). A reading committed after its device's watermark passed it (later than
the grace) is still not evaluated: its times alone cannot tell it from one another
worker's evaluation already took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import string
import time
import uuid
from array import array
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from lifebox_grpc.alarms import metrics
from lifebox_grpc.alarms.conditions import (
    BOOLEAN_FIELDS,
    CompiledRule,
    RateRule,
    Rule,
    compile_rule,
)
from lifebox_grpc.alarms.machine import UNKNOWN, State, Transition, step
from lifebox_grpc.alarms.rate import Series, rate_conditions
from lifebox_grpc.alarms.readings import Readings, time_of, us_of
from lifebox_grpc.alarms.scopes import ScopeIndex
from lifebox_grpc.native import ExpressionColumn, ExpressionError, evaluate_conditions
from lifebox_grpc.store import alarm_evaluation as store
from lifebox_grpc.store import alarm_rules as rule_store

log = logging.getLogger(__name__)

# Devices evaluated in one transaction.
DEVICES_PER_EVALUATION = 200


@dataclass
class TenantRules:
    """A tenant's enabled rules, as loaded at ``loaded_at`` (monotonic)."""

    loaded_at: float
    compiled: list[CompiledRule | RateRule]
    index: ScopeIndex[CompiledRule | RateRule]


class _Formatter(string.Formatter):
    """Fills a message template; an unknown name stays as written."""

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        return "{" + str(key) + "}"


_FORMATTER = _Formatter()


def fill_message(template: str | None, values: dict[str, Any]) -> str | None:
    if not template:
        return None
    try:
        return _FORMATTER.vformat(template, (), values)
    except (ValueError, IndexError, AttributeError, KeyError):
        return template  # a template that is not one is shown as written


@dataclass(frozen=True)
class Found:
    """What one evaluation of one device found (before it is written)."""

    raised: list[store.NewEvent] = field(default_factory=list)
    cleared: list[store.Clearing] = field(default_factory=list)
    changed: list[store.StoredState] = field(default_factory=list)
    # The events of ``raised`` by id (a clear of one of them is written into it).
    by_id: dict[uuid.UUID, store.NewEvent] = field(default_factory=dict)


def evaluate_device(
    device_id: uuid.UUID,
    device_name: str,
    rules: list[CompiledRule | RateRule],
    rows: Readings | Sequence[Any],
    states: dict[uuid.UUID, State],
    budget_us: int,
    history: dict[str, Series] | None = None,
    lateness: Sequence[int] = (),
    precomputed: dict[uuid.UUID, tuple[bytes, bytes]] | None = None,
) -> tuple[Found, dict[uuid.UUID, State], int]:
    """Run one device's readings (time order) through its rules; (found, new states, rows
    evaluated: fewer than given when the budget ran out). ``history``: the values of each
    rate rule's field before these readings, within the widest window (none: a rate starts
    at the second reading). ``lateness``: how late (us) each of the leading rows is that
    are late; rules that keep time (duration, dwell, rate) skip them. ``precomputed``:
    (raising, clearing) of rules already evaluated over these readings (:func:`shared`)."""
    found = Found()
    n = len(rows)
    if n == 0 or not rules:
        return found, states, n
    data = (
        rows
        if isinstance(rows, Readings)
        else Readings.from_rows(rows, sorted({f for r in rules for f in r.fields}))
    )
    given = precomputed or {}
    exprs_rules = [r for r in rules if isinstance(r, CompiledRule) and r.rule.id not in given]
    done = n
    out = b""
    if exprs_rules:
        fields = sorted({f for r in exprs_rules for f in r.fields})
        columns = [
            ExpressionColumn(f, f in BOOLEAN_FIELDS, data.columns[f].tobytes()) for f in fields
        ]
        exprs = [e for r in exprs_rules for e in (r.raise_expr, r.clear_expr)]
        out, done = evaluate_conditions(exprs, columns, n, budget_us)
        if done < n:
            metrics.ALARM_BUDGET_EXCEEDED.inc()
    times = data.times_us[:done]
    conditions: list[tuple[CompiledRule | RateRule, bytes, bytes, list[float | None]]] = []
    late = min(len(lateness), done)
    skipped = bytes([UNKNOWN]) * late
    for i, by_expr in enumerate(exprs_rules):
        raising = out[2 * i * n : 2 * i * n + done]
        clearing = out[(2 * i + 1) * n : (2 * i + 1) * n + done]
        if late and keeps_time(by_expr.rule):
            raising, clearing = skipped + raising[late:], skipped + clearing[late:]
        conditions.append((by_expr, raising, clearing, []))
    for by_given in (r for r in rules if isinstance(r, CompiledRule) and r.rule.id in given):
        raising, clearing = (c[:done] for c in given[by_given.rule.id])
        if late and keeps_time(by_given.rule):
            raising, clearing = skipped + raising[late:], skipped + clearing[late:]
        conditions.append((by_given, raising, clearing, []))
    for by_rate in (r for r in rules if isinstance(r, RateRule)):
        f = by_rate.fields[0]
        column = data.columns[f]
        values = [None if i < late or math.isnan(v := column[i]) else v for i in range(done)]
        prior = (history or {}).get(f, Series())
        conditions.append((by_rate, *rate_conditions(by_rate, prior, times, values)))
    if late:
        metrics.ALARM_LATE_READINGS.inc(late)
    new_states = dict(states)
    for compiled, raising, clearing, rates in conditions:
        rule = compiled.rule
        before = states.get(rule.id, State())
        after, transitions = step(
            before, raising, clearing, times, rule.duration_s * 1_000_000,
            rule.clear_after_s * 1_000_000,
        )  # fmt: skip
        for t in transitions:
            _record(
                found, compiled, device_id, device_name, data.row(t.index), t,
                rates[t.index] if rates else None,
                lateness[t.index] if t.index < late else None,
            )  # fmt: skip
        if after != before:
            new_states[rule.id] = after
            found.changed.append(
                store.StoredState(
                    rule.id, device_id, after.event_id,
                    None if after.pending_since_us is None else time_of(after.pending_since_us),
                    None if after.clear_since_us is None else time_of(after.clear_since_us),
                )
            )  # fmt: skip
    return found, new_states, done


def _record(
    found: Found,
    compiled: CompiledRule | RateRule,
    device_id: uuid.UUID,
    device_name: str,
    row: Any,
    t: Transition,
    rate: float | None = None,
    late_us: int | None = None,
) -> None:
    rule = compiled.rule
    value = None if rule.field is None or (v := row[rule.field]) is None else float(v)
    late = None if late_us is None else {"late_by_s": late_us / 1e6}
    if t.raised:
        readings = {f: row[f] for f in compiled.fields}
        message = fill_message(
            rule.message_template,
            {**readings, "value": value, "field": rule.field, "rule": rule.name,
             "device": device_name, "rate": rate},
        )  # fmt: skip
        details: dict[str, Any] = {"fields": readings}
        if rate is not None:
            details["rate_per_s"] = rate
        if late is not None:
            details["late"] = late
        event = store.NewEvent(
            t.event_id, rule.id, device_id, rule.severity, row["time"], value, message, details,
        )  # fmt: skip
        found.raised.append(event)
        found.by_id[event.id] = event
        return
    opened = found.by_id.get(t.event_id)
    if opened is not None:  # raised by these same readings: inserted cleared
        opened.cleared_at, opened.clear_value = row["time"], value
        if late is not None:
            opened.details["cleared_late"] = late
    else:
        found.cleared.append(store.Clearing(t.event_id, row["time"], value, late))


def shared(
    scoped: dict[uuid.UUID, list[CompiledRule | RateRule]],
    by_device: dict[uuid.UUID, Readings],
    budget_us: int,
) -> dict[uuid.UUID, dict[uuid.UUID, tuple[bytes, bytes]]]:
    """(raising, clearing) per device and rule of the rules several devices share (a device
    type's, the tenant's), each group of them evaluated over all its devices' readings in
    one native call: conditions are per reading, so rows of different devices can stand in
    one column, and 200 devices cost one call instead of 200. A group the budget stops is
    left to :func:`evaluate_device`."""
    devices_of: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    rule_of: dict[uuid.UUID, CompiledRule] = {}
    for device, of_device in scoped.items():
        if device not in by_device:
            continue
        for r in of_device:
            if isinstance(r, CompiledRule):
                devices_of[r.rule.id].append(device)
                rule_of[r.rule.id] = r
    groups: dict[tuple[uuid.UUID, ...], list[CompiledRule]] = defaultdict(list)
    for rule_id, holding in devices_of.items():
        if len(holding) > 1:
            groups[tuple(sorted(holding))].append(rule_of[rule_id])
    out: dict[uuid.UUID, dict[uuid.UUID, tuple[bytes, bytes]]] = defaultdict(dict)
    for devices, group in groups.items():
        fields = sorted({f for r in group for f in r.fields})
        total = sum(len(by_device[d]) for d in devices)
        columns = [
            ExpressionColumn(
                f, f in BOOLEAN_FIELDS, b"".join(by_device[d].columns[f].tobytes() for d in devices)
            )
            for f in fields
        ]
        exprs = [e for r in group for e in (r.raise_expr, r.clear_expr)]
        values, done = evaluate_conditions(exprs, columns, total, budget_us)
        if done < total:
            continue
        at = 0
        for d in devices:
            n = len(by_device[d])
            for i, r in enumerate(group):
                raising = values[2 * i * total + at : 2 * i * total + at + n]
                clearing = values[(2 * i + 1) * total + at : (2 * i + 1) * total + at + n]
                out[d][r.rule.id] = (raising, clearing)
            at += n
    return out


def keeps_time(rule: Rule) -> bool:
    """Whether a rule counts time between readings (a duration or a dwell): late readings
    are skipped by it (rate rules are skipped too)."""
    return rule.duration_s > 0 or rule.clear_after_s > 0


def batch_devices(
    row_times_us: bytes,
    rows_per_message: list[int],
    device_clients: list[tuple[uuid.UUID, uuid.UUID]],
) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """(device, client, earliest reading time) of each device with rows in a decoded batch."""
    times = array("q")
    times.frombytes(row_times_us)
    first: dict[uuid.UUID, tuple[uuid.UUID, int]] = {}
    at = 0
    for (device, client), count in zip(device_clients, rows_per_message, strict=True):
        if not count:
            continue
        lo = min(times[at : at + count])
        at += count
        known = first.get(device)
        if known is None or lo < known[1]:
            first[device] = (client, lo)
    return [(device, client, lo) for device, (client, lo) in first.items()]


@dataclass
class _Due:
    """A device to evaluate: when, from which reading time, what was noted of it."""

    client: uuid.UUID
    due: float
    first_us: int
    # The earliest commit that noted it (Unix us): readings older than the window then are late.
    arrived_us: int


class AlarmEvaluator:
    """Evaluates the devices committed batches name, ``grace_s`` after their commit."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        grace_s: float = 0.3,
        rules_ttl_s: float = 1.0,
        budget_us: int = 200_000,
        max_readings: int = 20_000,
        lateness_s: float = 60.0,
        errors: tuple[type[BaseException], ...] = (OSError, asyncpg.PostgresError),
    ) -> None:
        self.pool = pool
        self.grace_s = grace_s
        self.rules_ttl_s = rules_ttl_s
        self.budget_us = budget_us
        self.max_readings = max_readings
        self.lateness_us = int(lateness_s * 1_000_000)
        self.errors = errors
        self._rules: dict[uuid.UUID, TenantRules] = {}
        self._due: dict[uuid.UUID, _Due] = {}
        self._wake = asyncio.Event()
        self.evaluations = 0

    def note(self, devices: Iterable[tuple[uuid.UUID, uuid.UUID, int]]) -> None:
        """Devices of a committed batch, as (device, client, its earliest reading there),
        to evaluate ``grace`` later."""
        due = time.monotonic() + self.grace_s
        arrived = time.time_ns() // 1000
        for device, client, first_us in devices:
            known = self._due.get(device)
            if known is None:
                self._due[device] = _Due(client, due, first_us, arrived)
            else:
                known.first_us = min(known.first_us, first_us)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._due)

    async def _tenant_rules(self, client: uuid.UUID) -> TenantRules:
        cached = self._rules.get(client)
        now = time.monotonic()
        if cached is not None and now - cached.loaded_at < self.rules_ttl_s:
            return cached
        async with self.pool.acquire() as conn:
            rules = await rule_store.enabled_rules(conn, client)
        # Checking an expression costs about half a millisecond (the ANTLR parser): a rule
        # is compiled again only when it changed.
        known = {c.rule.id: c for c in cached.compiled} if cached is not None else {}
        compiled: list[CompiledRule | RateRule] = []
        for rule in rules:
            same = known.get(rule.id)
            if same is not None and same.rule == rule:
                compiled.append(same)
                continue
            try:
                c = compile_rule(rule)
            except (ExpressionError, ValueError):
                log.error("alarm rule does not check; skipped", extra={"rule_id": str(rule.id)})
                continue
            if c is not None:
                compiled.append(c)
        tenant = TenantRules(now, compiled, ScopeIndex(compiled))
        self._rules[client] = tenant
        return tenant

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate due devices until ``stop``, then what is due at once."""
        while not stop.is_set():
            if not self._due:
                self._wake.clear()
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
                continue
            now = time.monotonic()
            earliest = min(d.due for d in self._due.values())
            if earliest > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), earliest - now)
                continue
            await self.evaluate_due(now)
        await self.evaluate_due(math.inf)

    async def evaluate_due(self, now: float) -> None:
        taken: dict[uuid.UUID, dict[uuid.UUID, _Due]] = defaultdict(dict)
        for device, entry in list(self._due.items()):
            if entry.due <= now:
                taken[entry.client][device] = entry
                del self._due[device]
        for client, devices in taken.items():
            items = sorted(devices.items(), key=lambda kv: kv[0])
            for i in range(0, len(items), DEVICES_PER_EVALUATION):
                chunk = dict(items[i : i + DEVICES_PER_EVALUATION])
                try:
                    again = await self.evaluate(client, chunk)
                except self.errors as exc:
                    log.warning(
                        "alarm evaluation failed; retrying",
                        extra={
                            "error": type(exc).__name__,
                            "detail": str(exc)[:300],
                            "devices": len(chunk),
                        },
                    )
                    metrics.ALARM_EVALUATION_RETRIES.inc()
                    again = chunk
                    await asyncio.sleep(0.5)
                for device, entry in again.items():
                    entry.due = time.monotonic()
                    known = self._due.get(device)
                    if known is None:
                        self._due[device] = entry
                    else:  # noted again meanwhile: one entry with both
                        known.first_us = min(known.first_us, entry.first_us)
                        known.arrived_us = min(known.arrived_us, entry.arrived_us)

    async def evaluate(
        self, client: uuid.UUID, devices: dict[uuid.UUID, _Due]
    ) -> dict[uuid.UUID, _Due]:
        """Evaluate these devices of the client in one transaction; the devices with
        readings left over (more than one evaluation takes) to evaluate again."""
        tenant = await self._tenant_rules(client)
        if not tenant.compiled:
            return {}
        started = time.perf_counter()
        async with self.pool.acquire() as conn, conn.transaction():
            cursors = await store.lock_cursors(
                conn, client, {d: time_of(e.first_us - 1) for d, e in devices.items()}
            )
            matches = await store.metadata_matches(
                conn, [c.device_id for c in cursors], tenant.index.filters
            )
            contains: dict[uuid.UUID, list[str]] = defaultdict(list)
            for d, f in sorted(matches):
                contains[d].append(f)
            scoped = {
                c.device_id: tenant.index.of(
                    c.device_id, c.device_type, contains.get(c.device_id, ())
                )
                for c in cursors
            }
            await store.skip_to_latest(
                conn, client, [c.device_id for c in cursors if not scoped[c.device_id]]
            )
            cursors = [c for c in cursors if scoped[c.device_id]]
            if not cursors:
                return {}
            fields = sorted({f for rules in scoped.values() for r in rules for f in r.fields})
            by_device = {
                r["device_id"]: Readings.from_arrays(r, fields)
                for r in await store.reading_columns(conn, cursors, fields, self.max_readings)
            }
            history = await self._rate_history(conn, cursors, scoped)
            stored = await store.states(conn, client, [c.device_id for c in cursors])
            states: dict[uuid.UUID, dict[uuid.UUID, State]] = defaultdict(dict)
            for s in stored:
                states[s.device_id][s.rule_id] = State(
                    s.event_id,
                    None if s.pending_since is None else us_of(s.pending_since),
                    None if s.clear_since is None else us_of(s.clear_since),
                )
            # The CPU part in a thread: the native evaluator releases the GIL, so the event
            # loop goes on receiving and committing the next batches meanwhile.
            total, watermarks, late_counts, again = await asyncio.to_thread(
                self._evaluate_devices, client, devices, cursors, scoped, by_device, states,
                history,
            )  # fmt: skip
            await store.write_evaluation(
                conn, client, total.raised, total.cleared, total.changed, watermarks,
                late_counts,
            )  # fmt: skip
        metrics.ALARM_EVENTS.labels("raised").inc(len(total.raised))
        metrics.ALARM_EVENTS.labels("cleared").inc(len(total.cleared))
        metrics.ALARM_EVALUATION_SECONDS.observe(time.perf_counter() - started)
        self.evaluations += 1
        return again

    def _evaluate_devices(
        self,
        client: uuid.UUID,
        devices: dict[uuid.UUID, _Due],
        cursors: list[store.Cursor],
        scoped: dict[uuid.UUID, list[CompiledRule | RateRule]],
        by_device: dict[uuid.UUID, Readings],
        states: dict[uuid.UUID, dict[uuid.UUID, State]],
        history: dict[uuid.UUID, dict[str, Series]],
    ) -> tuple[Found, dict[uuid.UUID, datetime], dict[uuid.UUID, int], dict[uuid.UUID, _Due]]:
        """Every device's readings through its rules: what to write, and the devices to
        evaluate again."""
        total = Found()
        watermarks: dict[uuid.UUID, datetime] = {}
        late_counts: dict[uuid.UUID, int] = {}
        again: dict[uuid.UUID, _Due] = {}
        precomputed = shared(scoped, by_device, self.budget_us)
        for cursor in cursors:
            device_rows = by_device.get(cursor.device_id)
            if device_rows is None or not device_rows:
                continue
            lateness = self._lateness(device_rows, devices[cursor.device_id].arrived_us)
            found, _, done = evaluate_device(
                cursor.device_id, str(cursor.device_id), scoped[cursor.device_id],
                device_rows, states[cursor.device_id], self.budget_us,
                history.get(cursor.device_id), lateness, precomputed.get(cursor.device_id),
            )  # fmt: skip
            if lateness and done:
                late_counts[cursor.device_id] = min(len(lateness), done)
            total.raised.extend(found.raised)
            total.by_id.update(found.by_id)
            total.cleared.extend(found.cleared)
            total.changed.extend(found.changed)
            if done:
                watermarks[cursor.device_id] = device_rows.time(done - 1)
            if done < len(device_rows) or len(device_rows) >= self.max_readings:
                entry = devices[cursor.device_id]
                rest = device_rows.times_us[min(done, len(device_rows) - 1)]
                again[cursor.device_id] = _Due(client, 0.0, rest, entry.arrived_us)
            metrics.ALARM_READINGS_EVALUATED.inc(done)
        return total, watermarks, late_counts, again

    async def _rate_history(
        self,
        conn: asyncpg.Connection,
        cursors: list[store.Cursor],
        scoped: dict[uuid.UUID, list[CompiledRule | RateRule]],
    ) -> dict[uuid.UUID, dict[str, Series]]:
        """Per device and rate field, the values at or before the watermark within the
        widest window of the device's rate rules (a rate spans readings of two batches)."""
        wanted = [
            (c, rates)
            for c in cursors
            if (rates := [r for r in scoped[c.device_id] if isinstance(r, RateRule)])
        ]
        out: dict[uuid.UUID, dict[str, Series]] = {}
        if not wanted:
            return out
        fields = sorted({r.fields[0] for _, rates in wanted for r in rates})
        starts = {
            c.device_id: (
                c.evaluated_through - timedelta(microseconds=max(r.window_us for r in rates)),
                c.evaluated_through,
            )
            for c, rates in wanted
        }
        rows = await store.readings_within(conn, starts, fields, self.max_readings)
        for row in rows:
            series = out.setdefault(row["device_id"], {})
            for f in fields:
                if (v := row[f]) is not None:
                    series.setdefault(f, Series()).append(us_of(row["time"]), float(v))
        return out

    def _lateness(self, rows: Readings, arrived_us: int) -> list[int]:
        """How late (us) each of the leading rows is that was older than the window when
        committed (by its age then)."""
        oldest = arrived_us - self.lateness_us
        out: list[int] = []
        for at in rows.times_us:
            if at >= oldest:
                break
            out.append(arrived_us - at)
        return out
