"""The domain errors every layer raises, and nothing else.

Handlers and stores raise these; one interceptor (`interceptors/errors.py`) turns them into a
gRPC status with ``google.rpc`` details. This module knows neither gRPC nor protobuf, so the
store can raise them too. ``reason`` is the name of a ``lifebox.v1.ErrorReason`` value.
Messages are shown to clients: say what to fix, never include SQL, secrets or internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``user.email``) and what is wrong with it."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client may see. Subclasses fix the status code."""

    default_reason = "ERROR_REASON_UNSPECIFIED"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it does."""

    default_reason = "ERROR_REASON_NOT_FOUND"


class AlreadyExists(DomainError):
    """A unique key (email, slug…) is taken."""

    default_reason = "ERROR_REASON_ALREADY_EXISTS"


class InvalidArgument(DomainError):
    """The request itself is wrong; ``violations`` name each bad field."""

    default_reason = "ERROR_REASON_INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", reason=reason)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class PermissionDenied(DomainError):
    """The principal is known but may not do this."""

    default_reason = "ERROR_REASON_PERMISSION_MISSING"


class Unauthenticated(DomainError):
    """No valid credentials: a missing or bad token, or a wrong password."""

    default_reason = "ERROR_REASON_INVALID_TOKEN"


class FailedPrecondition(DomainError):
    """The request is fine but the resource's state forbids it (suspended, disabled…)."""

    default_reason = "ERROR_REASON_FAILED_PRECONDITION"


class Aborted(DomainError):
    """A conditional write lost a race: the resource changed since the caller read it
    (AIP-154: a stale etag). Read it again and retry."""

    default_reason = "ERROR_REASON_FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    """Too many attempts; retry after ``retry_after`` seconds.

    ``subject`` names what was limited (``login:address``), never the raw email or address,
    so a QuotaFailure detail leaks nothing.
    """

    default_reason = "ERROR_REASON_RATE_LIMITED"

    def __init__(
        self, message: str, *, retry_after: float, subject: str, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = max(0.0, retry_after)
        self.subject = subject


class DeadlineExceeded(DomainError):
    """The call ran past its deadline (the client's, or the server's cap)."""

    default_reason = "ERROR_REASON_UNSPECIFIED"


class ErrorCollector:
    """Gathers field violations so a request reports all its problems at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)
