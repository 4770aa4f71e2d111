"""Gives every call a request id: the caller's ``x-request-id`` if sane, else a new one.

The id is sent back as initial metadata, stamped on every log line of the call and put in
the message of an INTERNAL error, so a user's report finds the log.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

from lifebox_grpc.interceptors.base import AroundInterceptor, CallInfo
from lifebox_grpc.interceptors.state import CallState, begin_call

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is echoed into logs: only short, plain ones are trusted.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def _incoming_id(context: aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _SAFE_ID.match(value):
            return value
    return None


class RequestIdInterceptor(AroundInterceptor):
    """Outermost layer: creates the call's :class:`CallState`."""

    @asynccontextmanager
    async def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        request_id = _incoming_id(context) or uuid.uuid4().hex
        begin_call(CallState(request_id=request_id, method=call.method))
        await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
        yield
