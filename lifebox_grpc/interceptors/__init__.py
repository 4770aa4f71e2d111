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
from lifebox_grpc.interceptors.request_id import RequestIdInterceptor


def build_interceptors(
    *,
    keyring: Keyring,
    rules: Mapping[str, Rule],
    load_principal: PrincipalLoader,
    max_deadline_seconds: float,
) -> list[aio.ServerInterceptor]:
    """Outermost first: the request id exists before anything logs; the access log sees the
    final status; errors (including authentication's and the deadline's) are mapped once."""
    return [
        RequestIdInterceptor(),
        AccessLogInterceptor(),
        ErrorMappingInterceptor(),
        DeadlineInterceptor(max_deadline_seconds),
        AuthenticationInterceptor(keyring, rules, load_principal),
    ]
