"""One log line and two metrics per call: service, method, status, latency, principal.

Only identifiers are logged: never metadata values, requests, tokens or passwords.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc import aio

from lifebox_grpc import metrics
from lifebox_grpc.interceptors.base import AroundInterceptor, CallInfo, split_method
from lifebox_grpc.interceptors.state import current_call

log = logging.getLogger("lifebox.access")


def _final_code(
    context: aio.ServicerContext[Any, Any], recorded: grpc.StatusCode
) -> grpc.StatusCode:
    # A handler that aborts by itself bypasses the error interceptor: ask the context.
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):
        return recorded
    return code if isinstance(code, grpc.StatusCode) else recorded


class AccessLogInterceptor(AroundInterceptor):
    """Logs every call once it ends, however it ends."""

    @asynccontextmanager
    async def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        service, name = split_method(call.method)
        started = time.perf_counter()
        state = current_call()
        code = grpc.StatusCode.OK
        try:
            yield
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = state.code if state else grpc.StatusCode.UNKNOWN
            if code is grpc.StatusCode.OK:
                code = _final_code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.GRPC_REQUESTS.labels(service, name, code.name).inc()
            metrics.GRPC_LATENCY.labels(service, name).observe(elapsed)
            log.info(
                "%s/%s %s",
                service,
                name,
                code.name,
                extra={
                    "request_id": state.request_id if state else "-",
                    "service": service,
                    "method": name,
                    "code": code.name,
                    "latency_ms": round(elapsed * 1000, 2),
                    "principal": state.principal if state else "-",
                    "peer": context.peer(),
                },
            )
