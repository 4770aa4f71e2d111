"""BillingService: the plan catalogue."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from lifebox.v1 import billing_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, InvalidArgument, NotFound
from lifebox_grpc.services.billing.base import (
    ITEMS,
    BillingRpcs,
    parse_amount,
    parse_money,
    require_billing_write,
)
from lifebox_grpc.services.billing.mapping import INTERVAL_FROM_PB, plan_pb
from lifebox_grpc.services.common import (
    check_text,
    decode_page_token,
    encode_page_token,
    mask_paths,
    page_size,
    require_uuid,
    scoped,
)
from lifebox_grpc.store import billing_plans as plan_store

log = logging.getLogger(__name__)

_CODE = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")
PLAN_MASK_PATHS = ("name", "price", "device_quota", "included_usage", "active", "tax_rate")
_RATE = re.compile(r"^0(\.[0-9]{1,4})?$")
MAX_QUOTA = 1_000_000


def _included(errors: ErrorCollector, values: Any) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item, text in values.items():
        if item not in ITEMS:
            errors.add(f"plan.included_usage[{item}]", f"unknown item; one of {', '.join(ITEMS)}")
            continue
        amount = parse_amount(errors, f"plan.included_usage[{item}]", text, sign="nonnegative")
        if amount is not None:
            out[item] = amount
    return out


def _tax_rate(errors: ErrorCollector, value: str) -> Decimal:
    """A VAT rate: a decimal fraction from 0 up to (not including) 1, at most 4 places
    ("0.14" is Egypt's 14 %); empty is 0."""
    if not value:
        return Decimal(0)
    if not _RATE.match(value):
        errors.add("plan.tax_rate", 'a fraction from 0 to under 1, e.g. "0.14" for 14 %')
        return Decimal(0)
    return Decimal(value)


def _quota(errors: ErrorCollector, value: int) -> None:
    if not 0 <= value <= MAX_QUOTA:
        errors.add("plan.device_quota", f"must be between 0 and {MAX_QUOTA}")


class PlanRpcs(BillingRpcs):
    """Create, list and update plans."""

    async def CreatePlan(
        self, request: billing_pb2.CreatePlanRequest, context: Any
    ) -> billing_pb2.CreatePlanResponse:
        principal = require_principal()
        require_billing_write(principal)
        errors = ErrorCollector()
        p = request.plan
        if not _CODE.match(p.code):
            errors.add("plan.code", "2-64 lowercase letters, digits, '-' or '_', from a letter")
        check_text(errors, "plan.name", p.name, max_length=200)
        interval = INTERVAL_FROM_PB.get(p.billing_interval)
        if interval is None:
            errors.add("plan.billing_interval", "MONTH or YEAR")
        price, currency = parse_money(errors, "plan.price", p.price, sign="nonnegative")
        _quota(errors, p.device_quota)
        included = _included(errors, p.included_usage)
        tax_rate = _tax_rate(errors, p.tax_rate)
        errors.raise_if_any()
        assert price is not None
        assert interval is not None
        async with scoped(self.pool, principal) as conn:
            plan = await plan_store.create_plan(
                conn,
                plan_store.NewPlan(
                    p.code, p.name, interval, price, currency, p.device_quota, included, tax_rate
                ),
            )
        log.info("plan created", extra={"plan": plan.code, "by": principal.describe()})
        return billing_pb2.CreatePlanResponse(plan=plan_pb(plan))

    async def ListPlans(
        self, request: billing_pb2.ListPlansRequest, context: Any
    ) -> billing_pb2.ListPlansResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await plan_store.list_plans(
                conn,
                include_retired=request.include_retired,
                after=key[0] if key else None,
                limit=size + 1,
            )
        page, more = rows[:size], len(rows) > size
        return billing_pb2.ListPlansResponse(
            plans=[plan_pb(p) for p in page],
            next_page_token=encode_page_token([page[-1].code]) if more else "",
        )

    async def UpdatePlan(
        self, request: billing_pb2.UpdatePlanRequest, context: Any
    ) -> billing_pb2.UpdatePlanResponse:
        principal = require_principal()
        require_billing_write(principal)
        plan_id = require_uuid("plan.id", request.plan.id)
        errors = ErrorCollector()
        paths = mask_paths(errors, request.update_mask, PLAN_MASK_PATHS)
        p = request.plan
        changes: dict[str, object] = {}
        if "name" in paths:
            check_text(errors, "plan.name", p.name, max_length=200)
            changes["name"] = p.name
        if "device_quota" in paths:
            _quota(errors, p.device_quota)
            changes["device_quota"] = p.device_quota
        if "included_usage" in paths:
            changes["included_usage"] = _included(errors, p.included_usage)
        if "active" in paths:
            changes["active"] = p.active
        if "tax_rate" in paths:
            changes["tax_rate"] = _tax_rate(errors, p.tax_rate)
        price = None
        if "price" in paths:
            price, currency = parse_money(errors, "plan.price", p.price, sign="nonnegative")
            changes["price"] = price
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            current = await plan_store.get_plan(conn, plan_id)
            if current is None:
                raise NotFound("plan not found")
            if price is not None and currency != current.currency:
                raise InvalidArgument.field(
                    "plan.price.currency_code", "a plan's currency does not change"
                )
            updated = await plan_store.update_plan(conn, plan_id, changes)
        assert updated is not None
        log.info("plan updated", extra={"plan": updated.code, "by": principal.describe()})
        return billing_pb2.UpdatePlanResponse(plan=plan_pb(updated))
