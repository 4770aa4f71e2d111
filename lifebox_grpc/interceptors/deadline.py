"""A server-side cap on every unary call's deadline (``grpc_max_deadline_seconds``).

A client without a deadline, or with a very long one, still gets DEADLINE_EXCEEDED at the
cap. Cancelling the handler cancels the asyncpg query it awaits (asyncpg sends a cancel
request to PostgreSQL), so an abandoned call stops costing the database. Server-streaming
calls (live feeds) are bounded by their client's deadline and cancellation only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

from lifebox_grpc.errors import DeadlineExceeded
from lifebox_grpc.interceptors.base import AroundInterceptor, CallInfo


class DeadlineInterceptor(AroundInterceptor):
    """Runs each unary-response call under ``min(client deadline, cap)``."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds

    @asynccontextmanager
    async def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if call.response_streaming:
            yield
            return
        remaining = context.time_remaining()
        budget = self.max_seconds if remaining is None else min(remaining, self.max_seconds)
        timeout = asyncio.timeout(budget)
        try:
            async with timeout:
                yield
        except TimeoutError as exc:
            if not timeout.expired():
                raise
            raise DeadlineExceeded(
                f"the call took longer than its deadline ({budget:.1f}s)"
            ) from exc
