"""BillingService: customer prices, metered usage and postpaid periods."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from lifebox.v1 import billing_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.billing import accounts
from lifebox_grpc.errors import ErrorCollector, InvalidArgument, NotFound
from lifebox_grpc.services.billing.base import (
    ITEMS,
    BillingRpcs,
    money,
    parse_client,
    parse_money,
    require_billing_write,
    require_client,
)
from lifebox_grpc.services.billing.mapping import entry_pb, period_pb, price_pb, usage_item_pb
from lifebox_grpc.services.common import (
    check_text,
    decode_page_token,
    encode_page_token,
    page_size,
    require_uuid,
    scope_of,
    scoped,
)
from lifebox_grpc.store import billing_periods as period_store
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_subscriptions as sub_store
from lifebox_grpc.store import billing_usage as usage_store

log = logging.getLogger(__name__)
MAX_USAGE_DAYS = 400


class UsageRpcs(BillingRpcs):
    """Prices, usage and postpaid periods."""

    async def CreateCustomerPrice(
        self, request: billing_pb2.CreateCustomerPriceRequest, context: Any
    ) -> billing_pb2.CreateCustomerPriceResponse:
        principal = require_principal()
        errors = ErrorCollector()
        p = request.price
        client_id = parse_client(errors, principal, p.client_id)
        if p.item not in ITEMS:
            errors.add("price.item", f"one of {', '.join(ITEMS)}")
        unit, currency = parse_money(errors, "price.unit_price", p.unit_price, sign="nonnegative")
        errors.raise_if_any()
        assert unit is not None
        assert client_id is not None
        valid_from = p.valid_from.ToDatetime(UTC) if p.HasField("valid_from") else None
        async with scoped(self.pool, principal) as conn:
            account = await require_client(conn, principal, client_id)
            require_billing_write(principal)
            if currency != account.currency:
                raise InvalidArgument.field(
                    "price.unit_price.currency_code",
                    f"prices are in the client's currency, {account.currency}",
                )
            price = await usage_store.create_price(
                conn, client_id, p.item, unit, currency, valid_from or datetime.now(UTC)
            )
        log.info(
            "customer price set",
            extra={"client_id": str(client_id), "item": p.item, "by": principal.describe()},
        )
        return billing_pb2.CreateCustomerPriceResponse(price=price_pb(price))

    async def ListCustomerPrices(
        self, request: billing_pb2.ListCustomerPricesRequest, context: Any
    ) -> billing_pb2.ListCustomerPricesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        if request.item and request.item not in ITEMS:
            errors.add("item", f"one of {', '.join(ITEMS)}")
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
            prices = await usage_store.list_prices(conn, client_id, request.item or None)
        return billing_pb2.ListCustomerPricesResponse(prices=[price_pb(p) for p in prices])

    async def GetUsage(
        self, request: billing_pb2.GetUsageRequest, context: Any
    ) -> billing_pb2.GetUsageResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        errors.raise_if_any()
        assert client_id is not None
        now = datetime.now(UTC)
        async with scoped(self.pool, principal) as conn:
            account = await require_client(conn, principal, client_id)
            live = await sub_store.live_subscription(conn, client_id)
            plan = await plan_store.get_plan(conn, live.plan_id) if live and live.plan_id else None
            if request.HasField("start_time"):
                start = request.start_time.ToDatetime(UTC)
            elif live is not None:
                start = live.current_period_start
            else:
                start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else now
            if end <= start:
                errors.add("end_time", "must be after start_time")
            elif (end - start).days > MAX_USAGE_DAYS:
                errors.add("end_time", f"a period is at most {MAX_USAGE_DAYS} days")
            errors.raise_if_any()
            lines = await usage_store.meter(
                conn,
                client_id,
                start,
                end,
                currency=account.currency,
                included=dict(plan.included_usage) if plan else {},
            )
        total = sum((ln.amount for ln in lines), Decimal(0))
        out = billing_pb2.GetUsageResponse(
            items=[usage_item_pb(ln) for ln in lines], total=money(total, account.currency)
        )
        out.start_time.FromDatetime(start)
        out.end_time.FromDatetime(end)
        return out

    async def ListPostpaidPeriods(
        self, request: billing_pb2.ListPostpaidPeriodsRequest, context: Any
    ) -> billing_pb2.ListPostpaidPeriodsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        errors.raise_if_any()
        assert client_id is not None
        before = None
        if key:
            try:
                before = datetime.fromisoformat(key[0])
            except ValueError:
                raise InvalidArgument.field(
                    "page_token", "is not a token this API returned"
                ) from None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
            rows = await period_store.list_periods(conn, client_id, before=before, limit=size + 1)
            page, more = rows[:size], len(rows) > size
            out = [
                period_pb(
                    p,
                    await period_store.period_lines(conn, p.id),
                    await period_store.period_events(conn, p.id),
                )
                for p in page
            ]
        return billing_pb2.ListPostpaidPeriodsResponse(
            periods=out,
            next_page_token=encode_page_token([page[-1].period_start.isoformat()]) if more else "",
        )

    async def VoidPostpaidPeriod(
        self, request: billing_pb2.VoidPostpaidPeriodRequest, context: Any
    ) -> billing_pb2.VoidPostpaidPeriodResponse:
        principal = require_principal()
        errors = ErrorCollector()
        period_id = require_uuid("id", request.id)
        check_text(errors, "reason", request.reason, max_length=500)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            if await period_store.get_period(conn, period_id, principal.client_id) is None:
                raise NotFound("postpaid period not found")
            require_billing_write(principal)
            period, reversal = await accounts.void_period(
                conn,
                period_id,
                scope_of(principal).client_filter,
                actor=principal.user_id,
                reason=request.reason,
            )
            out = period_pb(
                period,
                await period_store.period_lines(conn, period.id),
                await period_store.period_events(conn, period.id),
            )
        log.info(
            "postpaid period voided",
            extra={"period_id": str(period.id), "by": principal.describe()},
        )
        return billing_pb2.VoidPostpaidPeriodResponse(
            period=out, credit_transaction=entry_pb(reversal) if reversal else None
        )
