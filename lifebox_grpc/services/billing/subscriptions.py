"""BillingService: subscriptions (start, read, change plan, cancel)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from lifebox.v1 import billing_pb2
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.billing import accounts
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.billing.base import (
    BillingRpcs,
    money,
    parse_client,
    require_billing_write,
    require_client,
)
from lifebox_grpc.services.billing.mapping import event_pb, subscription_pb
from lifebox_grpc.services.common import check_text, parse_uuid, require_uuid, scoped
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store import billing_plans as plan_store
from lifebox_grpc.store import billing_subscriptions as sub_store

log = logging.getLogger(__name__)
MAX_TRIAL_DAYS = 90


async def _subscription(
    conn: asyncpg.Connection, principal: Principal, subscription_id: uuid.UUID
) -> sub_store.Subscription:
    found = await sub_store.get_subscription(conn, subscription_id, principal.client_id, lock=True)
    if found is None:
        raise NotFound("subscription not found")
    return found


async def _plan(conn: asyncpg.Connection, plan_id: uuid.UUID) -> plan_store.Plan:
    plan = await plan_store.get_plan(conn, plan_id)
    if plan is None:
        raise NotFound("plan not found")
    return plan


class SubscriptionRpcs(BillingRpcs):
    """Start, read, change and cancel subscriptions."""

    async def CreateSubscription(
        self, request: billing_pb2.CreateSubscriptionRequest, context: Any
    ) -> billing_pb2.CreateSubscriptionResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        plan_id = parse_uuid(errors, "plan_id", request.plan_id)
        if not 0 <= request.trial_days <= MAX_TRIAL_DAYS:
            errors.add("trial_days", f"must be between 0 and {MAX_TRIAL_DAYS}")
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
            require_billing_write(principal)
            plan = await _plan(conn, plan_id)
            sub = await accounts.start_subscription(
                conn,
                client_id,
                plan,
                now=datetime.now(UTC),
                trial_days=request.trial_days,
                auto_renew=request.auto_renew,
                actor=principal.user_id,
            )
        log.info(
            "subscription created",
            extra={"subscription_id": str(sub.id), "plan": plan.code, "by": principal.describe()},
        )
        return billing_pb2.CreateSubscriptionResponse(subscription=subscription_pb(sub))

    async def GetSubscription(
        self, request: billing_pb2.GetSubscriptionRequest, context: Any
    ) -> billing_pb2.GetSubscriptionResponse:
        principal = require_principal()
        subscription_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            sub = await sub_store.get_subscription(conn, subscription_id, principal.client_id)
            if sub is None:
                raise NotFound("subscription not found")
            events = await sub_store.list_events(conn, sub.id)
        return billing_pb2.GetSubscriptionResponse(
            subscription=subscription_pb(sub), events=[event_pb(e) for e in events]
        )

    async def ListSubscriptions(
        self, request: billing_pb2.ListSubscriptionsRequest, context: Any
    ) -> billing_pb2.ListSubscriptionsResponse:
        page, token = await self.client_page(
            request.client_id,
            request.page_size,
            request.page_token,
            sub_store.list_subscriptions,
            lambda s: (s.created_at, s.id),
        )
        return billing_pb2.ListSubscriptionsResponse(
            subscriptions=[subscription_pb(s) for s in page], next_page_token=token
        )

    async def ChangeSubscriptionPlan(
        self, request: billing_pb2.ChangeSubscriptionPlanRequest, context: Any
    ) -> billing_pb2.ChangeSubscriptionPlanResponse:
        principal = require_principal()
        errors = ErrorCollector()
        subscription_id = parse_uuid(errors, "id", request.id)
        plan_id = parse_uuid(errors, "plan_id", request.plan_id)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            sub = await _subscription(conn, principal, subscription_id)
            require_billing_write(principal)
            plan = await _plan(conn, plan_id)
            changed, delta = await accounts.change_plan(
                conn, sub, plan, now=datetime.now(UTC), actor=principal.user_id
            )
            account = await ledger.client_balance(conn, sub.client_id)
        assert account is not None
        log.info(
            "subscription plan changed",
            extra={"subscription_id": str(sub.id), "plan": plan.code, "by": principal.describe()},
        )
        return billing_pb2.ChangeSubscriptionPlanResponse(
            subscription=subscription_pb(changed), prorated_amount=money(delta, account.currency)
        )

    async def CancelSubscription(
        self, request: billing_pb2.CancelSubscriptionRequest, context: Any
    ) -> billing_pb2.CancelSubscriptionResponse:
        principal = require_principal()
        errors = ErrorCollector()
        subscription_id = parse_uuid(errors, "id", request.id)
        check_text(errors, "reason", request.reason, max_length=500, required=False)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            sub = await _subscription(conn, principal, subscription_id)
            require_billing_write(principal)
            cancelled = await accounts.cancel(
                conn,
                sub,
                at_period_end=request.at_period_end,
                now=datetime.now(UTC),
                actor=principal.user_id,
                reason=request.reason or None,
            )
        log.info(
            "subscription cancelled",
            extra={
                "subscription_id": str(sub.id),
                "at_period_end": request.at_period_end,
                "by": principal.describe(),
            },
        )
        return billing_pb2.CancelSubscriptionResponse(subscription=subscription_pb(cancelled))
