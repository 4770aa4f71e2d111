"""Per-call facts shared by the interceptors of one call (request id, outcome, principal)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

import grpc

from lifebox_grpc.auth.principal import Principal


@dataclass
class CallState:
    """Mutable record of one call; the request-id interceptor creates it, others fill it."""

    request_id: str
    method: str
    code: grpc.StatusCode = grpc.StatusCode.OK
    principal: str = "-"
    # Left by authentication on a server stream with a token, for its periodic re-check
    # (interceptors/stream_access.py): authorizes the caller again as at the start of the
    # call; and when the token expires (Unix seconds).
    reauthorize: Callable[[], Awaitable[Principal]] | None = None
    expires_at: float | None = None


_state: ContextVar[CallState | None] = ContextVar("lifebox_call_state", default=None)


def begin_call(state: CallState) -> None:
    _state.set(state)


def current_call() -> CallState | None:
    """This call's state, or None outside a call (for example in a background task)."""
    return _state.get()


def current_request_id() -> str:
    state = _state.get()
    return state.request_id if state else "-"
