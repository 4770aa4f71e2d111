"""Bounded concurrency: per principal and per server, counted in this `serve` process.

Three kinds of call are counted: unary calls, the expensive ones among them
(:data:`HEAVY_METHODS`, each also counted as a unary call) and server streams. A call past any
bound fails at once with RESOURCE_EXHAUSTED (QuotaFailure naming the bound, RetryInfo), before
its handler runs, so one caller cannot take every database connection or the event loop: the
expensive-call bounds stay below the pool's size, so cheap calls (Login, GetDevice) always find
a connection.

"Per principal" means per signed-in user *in this process*: with N replicas behind a balancer,
a user may hold up to N times the bound. The counters are plain integers in memory (no lock,
no database: one event loop), so the check costs a dictionary update per call. Calls without
a principal (Login and the other public methods) count only towards the server's bounds;
health checks and reflection are not counted at all.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from grpc import aio

from lifebox_grpc.auth.permissions import UNGUARDED_PREFIXES
from lifebox_grpc.auth.principal import current_principal
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ResourceExhausted
from lifebox_grpc.interceptors.base import AroundInterceptor, CallInfo

# What a caller told to retry waits: calls at these bounds end in well under a second or two.
RETRY_AFTER_SECONDS = 1.0

_TELEMETRY = "/lifebox.v1.TelemetryService/"
_DEVICES = "/lifebox.v1.DeviceService/"
# Calls whose cost grows with the request (rows read, values computed, items written). Every
# expensive RPC added later (GetPageData, batch sends, dry runs) belongs here; a test checks
# that each name is a method the server offers.
HEAVY_METHODS: frozenset[str] = frozenset(
    {
        _TELEMETRY + "QueryTelemetry",
        _TELEMETRY + "AggregateTelemetry",
        _TELEMETRY + "GetLatestTelemetry",
        _DEVICES + "BatchCreateDevices",
        # --- files (issue 17): an upload holds a database connection (its transaction) for
        # as long as its client streams ---
        "/lifebox.v1.FileService/UploadFile",
    }
)


@dataclass(frozen=True)
class Bound:
    """How many calls of one kind may run at once, per principal and per server."""

    kind: str  # calls, heavy calls, streams
    per_principal: int
    per_server: int


class InFlight:
    """Calls of one kind running now: in all, and per principal."""

    def __init__(self, bound: Bound) -> None:
        self.bound = bound
        self.total = 0
        self.by_principal: dict[uuid.UUID, int] = {}

    def enter(self, principal: uuid.UUID | None) -> None:
        """Count one more call, or raise ResourceExhausted (counting nothing) at a bound."""
        bound = self.bound
        if self.total >= bound.per_server:
            raise ResourceExhausted(
                f"the server is running as many {bound.kind} as it may "
                f"({bound.per_server}): retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
                subject=f"server:{bound.kind.replace(' ', '_')}",
            )
        if principal is not None:
            mine = self.by_principal.get(principal, 0)
            if mine >= bound.per_principal:
                raise ResourceExhausted(
                    f"you have {mine} {bound.kind} running, the most one user may have at "
                    "once on this server: wait for one to end, then retry",
                    retry_after=RETRY_AFTER_SECONDS,
                    subject=f"principal:{bound.kind.replace(' ', '_')}",
                )
            self.by_principal[principal] = mine + 1
        self.total += 1

    def leave(self, principal: uuid.UUID | None) -> None:
        self.total -= 1
        if principal is not None:
            left = self.by_principal[principal] - 1
            if left:
                self.by_principal[principal] = left
            else:
                del self.by_principal[principal]


class CallLimits:
    """The three counters of one server."""

    def __init__(self, calls: Bound, heavy: Bound, streams: Bound) -> None:
        self.calls = InFlight(calls)
        self.heavy = InFlight(heavy)
        self.streams = InFlight(streams)

    @classmethod
    def from_settings(cls, settings: Settings) -> CallLimits:
        return cls(
            Bound(
                "calls",
                settings.grpc_max_calls_per_principal,
                settings.grpc_max_calls_per_server,
            ),
            Bound(
                "expensive calls",
                settings.grpc_max_heavy_calls_per_principal,
                settings.grpc_max_heavy_calls_per_server,
            ),
            Bound(
                "streams",
                settings.grpc_max_streams_per_principal,
                settings.grpc_max_streams_per_server,
            ),
        )


class _Counted:
    """One call's places in its counters, taken on entry and given back on exit (a plain
    class: a generator-based context manager costs several times more per call)."""

    __slots__ = ("counters", "principal", "taken")

    def __init__(self, counters: tuple[InFlight, ...], principal: uuid.UUID | None) -> None:
        self.counters = counters
        self.principal = principal
        self.taken = 0

    async def __aenter__(self) -> None:
        try:
            for counter in self.counters:
                counter.enter(self.principal)
                self.taken += 1
        except ResourceExhausted:
            self._give_back()  # no __aexit__ follows a failed __aenter__
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._give_back()

    def _give_back(self) -> None:
        for counter in self.counters[: self.taken]:
            counter.leave(self.principal)
        self.taken = 0


class _Uncounted:
    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_UNCOUNTED = _Uncounted()


class LimitsInterceptor(AroundInterceptor):
    """Counts every call of our API against :class:`CallLimits`; runs after authentication
    (the principal is known) and before the handler."""

    def __init__(self, limits: CallLimits, heavy_methods: frozenset[str] = HEAVY_METHODS) -> None:
        self.limits = limits
        self.heavy_methods = heavy_methods

    def _counters(self, call: CallInfo) -> tuple[InFlight, ...]:
        if call.method.startswith(UNGUARDED_PREFIXES):
            return ()
        if call.response_streaming:
            return (self.limits.streams,)
        if call.method in self.heavy_methods:
            return (self.limits.calls, self.limits.heavy)
        return (self.limits.calls,)

    def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        counters = self._counters(call)
        if not counters:
            return _UNCOUNTED
        principal = current_principal()
        return _Counted(counters, principal.user_id if principal is not None else None)
