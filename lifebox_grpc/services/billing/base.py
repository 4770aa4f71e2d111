"""BillingService: what every resource module of the service shares: the pool and settings,
which client a request is about, who may change billing, money and page parsing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import asyncpg

from lifebox.v1 import billing_pb2_grpc, common_pb2
from lifebox_grpc.auth.permissions import BILLING_PAY, BILLING_WRITE
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.billing.fawry import FawryClient
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition, NotFound, PermissionDenied
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    scoped,
)
from lifebox_grpc.store import billing_ledger as ledger

_AMOUNT = re.compile(r"^-?[0-9]{1,16}(\.[0-9]{1,4})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
ITEMS = ("device_month", "million_readings", "command", "storage_gb_month")


def require_billing_write(principal: Principal) -> None:
    """Changing billing takes billing.write and being platform staff, whatever the role
    holds (a tenant granted billing.write still may not price itself)."""
    principal.require(BILLING_WRITE)
    if not principal.is_staff:
        raise PermissionDenied("only platform staff change billing")


def require_billing_pay(principal: Principal) -> None:
    principal.require(BILLING_PAY)


def parse_client(errors: ErrorCollector, principal: Principal, value: str) -> uuid.UUID | None:
    """The client a request is about: a tenant's own (empty or its own id; another id is
    looked up, and reads NOT_FOUND), a staff caller's named one (required)."""
    if principal.client_id is not None and not value:
        return principal.client_id
    parsed: uuid.UUID | None = parse_uuid(errors, "client_id", value)
    return parsed


async def require_client(
    conn: asyncpg.Connection, principal: Principal, client_id: uuid.UUID
) -> ledger.Balance:
    """The client's account if the caller may see it (RLS and the scope agree), else
    NOT_FOUND."""
    if principal.client_id is not None and client_id != principal.client_id:
        raise NotFound("client not found")
    account = await ledger.client_balance(conn, client_id)
    if account is None:
        raise NotFound("client not found")
    return account


def parse_amount(
    errors: ErrorCollector, field: str, value: str, *, sign: str = "positive"
) -> Decimal | None:
    """A decimal amount with up to 4 fraction digits; ``sign`` positive, nonzero or any."""
    if not value:
        errors.add(field, "required")
        return None
    if not _AMOUNT.match(value):
        errors.add(field, "a decimal number with at most 4 fraction digits, e.g. 840.00")
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        errors.add(field, "not a number")
        return None
    if sign == "positive" and amount <= 0:
        errors.add(field, "must be positive")
    elif sign == "nonzero" and amount == 0:
        errors.add(field, "must not be zero")
    elif sign == "nonnegative" and amount < 0:
        errors.add(field, "must not be negative")
    return amount


def parse_money(
    errors: ErrorCollector, field: str, money: common_pb2.Money, *, sign: str = "positive"
) -> tuple[Decimal | None, str]:
    if not _CURRENCY.match(money.currency_code):
        errors.add(f"{field}.currency_code", "must be an ISO 4217 code such as EGP")
    return parse_amount(errors, f"{field}.amount", money.amount, sign=sign), money.currency_code


def check_currency(errors: ErrorCollector, field: str, code: str) -> None:
    if not _CURRENCY.match(code):
        errors.add(field, "must be an ISO 4217 code such as EGP")


def time_page_key(errors: ErrorCollector, token: str) -> tuple[datetime, uuid.UUID] | None:
    key = decode_page_token(errors, token, 2)
    if key is None:
        return None
    try:
        return datetime.fromisoformat(key[0]), uuid.UUID(key[1])
    except ValueError:
        errors.add("page_token", "is not a token this API returned")
        return None


def time_page_token(at: datetime, row_id: uuid.UUID) -> str:
    return encode_page_token([at.isoformat(), str(row_id)])


T = TypeVar("T")
# A store listing: (conn, client, before=(time, id) | None, limit) -> rows, newest first.
Fetch = Callable[..., Awaitable[list[T]]]


class BillingRpcs(billing_pb2_grpc.BillingServiceServicer):
    """The pool and settings the RPCs of every resource module use."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def client_page(
        self,
        client: str,
        size_value: int,
        token: str,
        fetch: Fetch[T],
        key: Callable[[T], tuple[datetime, uuid.UUID]],
    ) -> tuple[list[T], str]:
        """One page of a client's rows (the caller's own, or a named one it may see),
        keyset-paged on ``key`` (time, id), newest first; (rows, next page token)."""
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, client)
        size = page_size(errors, size_value)
        before = time_page_key(errors, token)
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
            rows = await fetch(conn, client_id, before=before, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        return page, time_page_token(*key(page[-1])) if more else ""

    def fawry(self) -> FawryClient:
        """The Fawry client; FAILED_PRECONDITION when this server has no merchant account."""
        key = self.settings.fawry_secure_key
        if not self.settings.fawry_active or not self.settings.fawry_merchant_code or key is None:
            raise FailedPrecondition("payments through Fawry are not configured on this server")
        return FawryClient(
            self.settings.fawry_base_url,
            self.settings.fawry_merchant_code,
            key.get_secret_value(),
            timeout=self.settings.fawry_timeout_seconds,
        )


def money(amount: Decimal | None, currency: str) -> common_pb2.Money | None:
    if amount is None:
        return None
    return common_pb2.Money(currency_code=currency, amount=f"{amount:f}")


def opt(value: Any) -> str:
    return "" if value is None else str(value)
