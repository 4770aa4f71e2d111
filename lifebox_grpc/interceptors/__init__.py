"""Server interceptors, one concern each, and the order `serve` stacks them in."""

from __future__ import annotations

from collections.abc import Mapping

from grpc import aio

from lifebox_grpc.auth.permissions import Rule
from lifebox_grpc.auth.tokens import Keyring
from lifebox_grpc.interceptors.access_log import AccessLogInterceptor
from lifebox_grpc.interceptors.authentication import AuthenticationInterceptor, PrincipalLoader
from lifebox_grpc.interceptors.deadline import DeadlineInterceptor
from lifebox_grpc.interceptors.errors import ErrorMappingInterceptor
from lifebox_grpc.interceptors.limits import HEAVY_METHODS, CallLimits, LimitsInterceptor
from lifebox_grpc.interceptors.request_id import RequestIdInterceptor
from lifebox_grpc.interceptors.stream_access import StreamAccessInterceptor


def build_interceptors(
    *,
    keyring: Keyring,
    rules: Mapping[str, Rule],
    load_principal: PrincipalLoader,
    max_deadline_seconds: float,
    limits: CallLimits,
    stream_recheck_seconds: float,
    heavy_methods: frozenset[str] = HEAVY_METHODS,
) -> list[aio.ServerInterceptor]:
    """Outermost first: the request id exists before anything logs; the access log sees the
    final status; errors (including authentication's, the limits' and the deadline's) are
    mapped once; the limits count a call once its principal is known; a stream's re-checks
    wrap its handler alone."""
    return [
        RequestIdInterceptor(),
        AccessLogInterceptor(),
        ErrorMappingInterceptor(),
        DeadlineInterceptor(max_deadline_seconds),
        AuthenticationInterceptor(keyring, rules, load_principal),
        LimitsInterceptor(limits, heavy_methods),
        StreamAccessInterceptor(stream_recheck_seconds),
    ]
