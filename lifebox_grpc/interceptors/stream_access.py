"""Server streams keep checking their caller: access is not decided once for an endless call.

Every server-streaming call made with an access token re-authorizes its caller every
``interval`` seconds (the principal cache's lifetime) and at the token's expiry, through the
same path the authentication interceptor took (:attr:`CallState.reauthorize`: the token verified
again, the principal reloaded through the cached loader, the method's permission checked), and
runs the checks its handler registered with :func:`recheck_stream` (a stream's devices still
visible, say) on the reloaded principal. The first check that fails ends the stream with its
error: UNAUTHENTICATED (token expired, user disabled or deleted, password changed, session
logged out), PERMISSION_DENIED (permission gone, client suspended) or NOT_FOUND (a resource no
longer visible). So a stream ends within ``interval`` of the change, and never outlives its
token by more than that.

The check runs beside the stream in a task of its own. A failure found while the handler is
waiting (for a notification, a query) cancels that wait; one found while a message is being
sent ends the stream before the next one. The database being unreachable or busy (no free
connection) is not a verdict: the check is tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from grpc import aio

from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.errors import (
    DomainError,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
)
from lifebox_grpc.interceptors.base import Continuation
from lifebox_grpc.interceptors.state import current_call

log = logging.getLogger(__name__)

Check = Callable[[Principal], Awaitable[None] | None]
Reauthorize = Callable[[], Awaitable[Principal]]


class _Watch:
    """One stream's re-authorization: the checks, and the verdict once one fails."""

    def __init__(self, reauthorize: Reauthorize, interval: float, expires_at: float | None) -> None:
        self.reauthorize = reauthorize
        self.interval = interval
        self.expires_at = expires_at
        self.checks: list[Check] = []
        self.failure: DomainError | None = None
        self.busy = False  # the handler is running (not the caller sending its message)
        self.cancelled = False  # this watch cancelled the handler's task
        task = asyncio.current_task()
        assert task is not None
        self.task = task

    def _delay(self) -> float:
        if self.expires_at is None:
            return self.interval
        return max(0.0, min(self.interval, self.expires_at - time.time()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._delay())
            try:
                principal = await self.reauthorize()
                for check in self.checks:
                    result = check(principal)
                    if inspect.isawaitable(result):
                        await result
            except ResourceExhausted:
                # No connection came free for the reload: a busy server, not a verdict.
                log.warning("stream re-authorization found the server busy; retrying")
            except DomainError as error:
                self._fail(error)
                return
            except Exception:
                log.warning("stream re-authorization failed; retrying", exc_info=True)

    def _fail(self, error: DomainError) -> None:
        if isinstance(error, FailedPrecondition):
            # A suspended client: the caller may no longer act, whatever it asked for.
            error = PermissionDenied(error.message, reason=error.reason, metadata=error.metadata)
        self.failure = error
        if self.busy:
            self.cancelled = True
            self.task.cancel()

    def verdict(self) -> DomainError:
        """The failure, after taking back the cancellation this watch caused."""
        assert self.failure is not None
        if self.cancelled and self.task.cancelling():
            self.task.uncancel()
        self.cancelled = False
        return self.failure


_current: ContextVar[_Watch | None] = ContextVar("lifebox_stream_watch", default=None)


def recheck_stream(check: Check) -> None:
    """Also run ``check`` on the caller's freshly loaded principal at every re-authorization
    of the current server stream; an error it raises (NotFound for a resource the caller may
    no longer see) ends the stream. A no-op outside a stream (or on one without a token).

    A check should need no database round trip when it can: the principal carries the
    caller's role, permissions and assigned devices.
    """
    watch = _current.get()
    if watch is not None:
        watch.checks.append(check)


class StreamAccessInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Puts every server-streaming call under a :class:`_Watch`; unary calls pass untouched.

    Not an :class:`~lifebox_grpc.interceptors.base.AroundInterceptor`: it must know where
    one response ends and the next begins, which a context around the whole call cannot.
    Runs after authentication (which leaves :attr:`CallState.reauthorize`).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not handler.response_streaming:
            return handler
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._watched(handler.unary_stream))
        return handler._replace(stream_stream=self._watched(handler.stream_stream))

    def _watched(self, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        interval = self.interval

        async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
            state = current_call()
            if state is None or state.reauthorize is None:  # no token: nothing to re-check
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result
                return
            watch = _Watch(state.reauthorize, interval, state.expires_at)
            token = _current.set(watch)
            watchdog = asyncio.create_task(watch.run(), name="stream-reauthorization")
            result = behavior(request, context)
            try:
                if not inspect.isasyncgen(result):  # a handler that writes with context.write
                    await _step(watch, result)
                    return
                while True:
                    if watch.failure is not None:
                        raise watch.verdict()
                    try:
                        item = await _step(watch, anext(result))
                    except StopAsyncIteration:
                        if watch.failure is not None:  # it ended because the watch cancelled it
                            raise watch.verdict() from None
                        return
                    yield item
            finally:
                watchdog.cancel()
                if inspect.isasyncgen(result):
                    await result.aclose()
                # A generator abandoned mid-send is closed later, from another context.
                with contextlib.suppress(ValueError):
                    _current.reset(token)

        return wrapped


async def _step(watch: _Watch, step: Awaitable[Any]) -> Any:
    """Await one step of the handler, cancellable by the watch; its verdict if it fails."""
    watch.busy = True
    try:
        return await step
    except StopAsyncIteration:
        raise
    except BaseException:
        if watch.failure is not None and watch.cancelled:
            raise watch.verdict() from None
        raise
    finally:
        watch.busy = False
