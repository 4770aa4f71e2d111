"""One way to write a server interceptor: an async context manager around every call.

grpc.aio interceptors return a method handler; wrapping each of its four behaviour shapes by
hand in every interceptor is where bugs hide. A subclass of :class:`AroundInterceptor`
implements only :meth:`around`, which runs around the handler of unary and streaming calls
alike, in the task that runs the handler (so contextvars it sets are seen downstream).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio


@dataclass(frozen=True)
class CallInfo:
    """What an interceptor knows of a call before it runs."""

    method: str  # /pkg.Service/Method
    response_streaming: bool


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def split_method(full_method: str) -> tuple[str, str]:
    """``/lifebox.v1.AuthService/Login`` → (``lifebox.v1.AuthService``, ``Login``)."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


class AroundInterceptor(aio.ServerInterceptor, ABC):  # type: ignore[misc]
    """Runs :meth:`around` around the handler of every call it applies to."""

    @abstractmethod
    def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        """The context every call runs in."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        # A method's handler is the same object on every call (and so, through this cache,
        # is every interceptor's wrapping of it): wrap it once, not once per call.
        method = handler_call_details.method
        wrapped = self.__dict__.setdefault("_wrapped_handlers", {})
        known = wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        call = CallInfo(method, bool(handler.response_streaming))
        result = _wrap_handler(handler, lambda context: self.around(call, context))
        wrapped[method] = (handler, result)
        return result


Around = Callable[[Any], AbstractAsyncContextManager[None]]


def _wrap_handler(handler: Any, around: Around) -> Any:
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, around))
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, around))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, around))
    if handler.stream_stream is not None:
        return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, around))
    return handler


def _wrap_unary(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    async def wrapped(request: Any, context: Any) -> Any:
        async with around(context):
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

    return wrapped


def _wrap_stream(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
        async with around(context):
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                # A handler that writes with context.write() returns a coroutine.
                await result

    return wrapped
