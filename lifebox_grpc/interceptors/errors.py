"""The one mapping from domain errors to gRPC status codes with ``google.rpc`` details.

- every error carries ErrorInfo (reason = a ``lifebox.v1.ErrorReason`` name, domain
  :data:`ERROR_DOMAIN`);
- InvalidArgument adds BadRequest field violations;
- ResourceExhausted adds QuotaFailure and RetryInfo;
- anything unexpected is logged with its traceback and the request id, and the client gets
  INTERNAL with that request id only: never a traceback, SQL or exception text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from lifebox_grpc.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from lifebox_grpc.interceptors.base import AroundInterceptor, CallInfo
from lifebox_grpc.interceptors.state import current_call, current_request_id

log = logging.getLogger("lifebox.errors")

ERROR_DOMAIN = "lifebox.io"

_CODES: tuple[tuple[type[DomainError], grpc.StatusCode], ...] = (
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Aborted, grpc.StatusCode.ABORTED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_code_of(error: DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.UNKNOWN


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_of(error: DomainError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The status code and the ``google.rpc.Status`` (with details) a client receives."""
    code = status_code_of(error)
    details: list[Message] = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, ResourceExhausted):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.subject, description=error.message
                    )
                ]
            )
        )
        details.append(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=math.ceil(error.retry_after))
            )
        )
    status = status_pb2.Status(
        code=code.value[0], message=error.message, details=[_pack(d) for d in details]
    )
    return code, status


def internal_status(request_id: str) -> status_pb2.Status:
    return status_pb2.Status(
        code=grpc.StatusCode.INTERNAL.value[0],
        message=f"internal error; request id {request_id}",
        details=[
            _pack(
                error_details_pb2.ErrorInfo(
                    reason="ERROR_REASON_INTERNAL",
                    domain=ERROR_DOMAIN,
                    metadata={"request_id": request_id},
                )
            )
        ],
    )


class ErrorMappingInterceptor(AroundInterceptor):
    """Turns whatever a handler raises into a well-formed status."""

    @asynccontextmanager
    async def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        state = current_call()
        try:
            yield
        except aio.AbortError:
            raise  # the handler aborted with a status of its own
        except DomainError as error:
            code, status = status_of(error)
            if state:
                state.code = code
            await context.abort_with_status(rpc_status.to_status(status))
        except Exception:
            request_id = current_request_id()
            log.exception("unexpected error in %s", call.method, extra={"request_id": request_id})
            if state:
                state.code = grpc.StatusCode.INTERNAL
            await context.abort_with_status(rpc_status.to_status(internal_status(request_id)))
