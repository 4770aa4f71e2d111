"""BillingService: stored billing rows -> protobuf messages."""

from __future__ import annotations

from decimal import Decimal

from lifebox.v1 import billing_pb2
from lifebox_grpc.services.billing.base import money, opt
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store import billing_cards as card_store
from lifebox_grpc.store import billing_fawry as fawry_store
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store import billing_periods as periods
from lifebox_grpc.store import billing_plans as plans
from lifebox_grpc.store import billing_subscriptions as subs
from lifebox_grpc.store import billing_usage as usage

INTERVAL_TO_PB = {
    "month": billing_pb2.BILLING_INTERVAL_MONTH,
    "year": billing_pb2.BILLING_INTERVAL_YEAR,
}
INTERVAL_FROM_PB = {v: k for k, v in INTERVAL_TO_PB.items()}
STATUS_TO_PB = {
    "trialing": billing_pb2.SUBSCRIPTION_STATUS_TRIALING,
    "active": billing_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    "past_due": billing_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
    "cancelled": billing_pb2.SUBSCRIPTION_STATUS_CANCELLED,
    "expired": billing_pb2.SUBSCRIPTION_STATUS_EXPIRED,
}
KIND_TO_PB = {
    "topup": billing_pb2.CREDIT_TRANSACTION_KIND_TOPUP,
    "charge": billing_pb2.CREDIT_TRANSACTION_KIND_CHARGE,
    "refund": billing_pb2.CREDIT_TRANSACTION_KIND_REFUND,
    "adjustment": billing_pb2.CREDIT_TRANSACTION_KIND_ADJUSTMENT,
    "subscription": billing_pb2.CREDIT_TRANSACTION_KIND_SUBSCRIPTION,
    "usage": billing_pb2.CREDIT_TRANSACTION_KIND_USAGE,
    "reversal": billing_pb2.CREDIT_TRANSACTION_KIND_REVERSAL,
    "tax": billing_pb2.CREDIT_TRANSACTION_KIND_TAX,
}


def _qty(value: Decimal) -> str:
    """A quantity without trailing zeros ("40", "0.0009")."""
    return f"{value.normalize():f}"


def plan_pb(plan: plans.Plan) -> billing_pb2.Plan:
    return billing_pb2.Plan(
        id=str(plan.id),
        code=plan.code,
        name=plan.name,
        billing_interval=INTERVAL_TO_PB[plan.billing_interval],
        price=money(plan.price, plan.currency),
        device_quota=plan.device_quota,
        included_usage={k: f"{v:f}" for k, v in plan.included_usage.items()},
        tax_rate=f"{plan.tax_rate:f}",
        active=plan.active,
        create_time=timestamp(plan.created_at),
        update_time=timestamp(plan.updated_at),
    )


def subscription_pb(sub: subs.Subscription) -> billing_pb2.Subscription:
    return billing_pb2.Subscription(
        id=str(sub.id),
        client_id=str(sub.client_id),
        plan_id=opt(sub.plan_id),
        plan_code=sub.plan,
        status=STATUS_TO_PB[sub.status],
        billing_interval=INTERVAL_TO_PB[sub.billing_interval],
        current_period_start=timestamp(sub.current_period_start),
        current_period_end=timestamp(sub.current_period_end),
        device_quota=sub.device_quota,
        price=money(sub.price, sub.currency),
        auto_renew=sub.auto_renew,
        cancel_at_period_end=sub.cancel_at_period_end,
        past_due_time=timestamp(sub.past_due_since),
        end_time=timestamp(sub.ended_at),
        create_time=timestamp(sub.created_at),
    )


def event_pb(event: subs.Event) -> billing_pb2.SubscriptionEvent:
    return billing_pb2.SubscriptionEvent(
        kind=event.kind,
        from_status=STATUS_TO_PB.get(
            event.from_status or "", billing_pb2.SUBSCRIPTION_STATUS_UNSPECIFIED
        ),
        to_status=STATUS_TO_PB[event.to_status],
        from_plan=opt(event.from_plan),
        to_plan=event.to_plan,
        actor_user_id=opt(event.actor),
        reason=opt(event.reason),
        time=timestamp(event.at),
    )


def price_pb(price: usage.Price) -> billing_pb2.CustomerPrice:
    return billing_pb2.CustomerPrice(
        id=str(price.id),
        client_id=str(price.client_id),
        item=price.item,
        unit_price=money(price.unit_price, price.currency),
        valid_from=timestamp(price.valid_from),
        valid_to=timestamp(price.valid_to),
    )


def usage_item_pb(line: usage.Line) -> billing_pb2.UsageItem:
    return billing_pb2.UsageItem(
        item=line.item,
        quantity=_qty(line.quantity),
        included_quantity=_qty(line.included),
        amount=money(line.amount, line.currency),
        pieces=[
            billing_pb2.UsagePiece(
                start_time=timestamp(p.start),
                end_time=timestamp(p.end),
                quantity=_qty(p.quantity),
                unit_price=money(p.unit_price, line.currency),
                billable_quantity=_qty(p.billable),
                amount=money(p.amount, line.currency),
            )
            for p in line.pieces
        ],
    )


def entry_pb(entry: ledger.Entry) -> billing_pb2.CreditTransaction:
    return billing_pb2.CreditTransaction(
        id=str(entry.id),
        client_id=str(entry.client_id),
        amount=money(entry.amount, entry.currency),
        kind=KIND_TO_PB[entry.kind],
        status=entry.status,
        balance_after=money(entry.balance_after, entry.currency),
        description=opt(entry.description),
        reverses_id=opt(entry.reverses_id),
        external_ref=opt(entry.external_ref),
        original_amount=money(entry.original_amount, entry.original_currency or ""),
        exchange_rate=f"{entry.exchange_rate:f}" if entry.exchange_rate is not None else "",
        exchange_rate_id=opt(entry.exchange_rate_id),
        create_time=timestamp(entry.created_at),
    )


def rate_pb(rate: ledger.Rate) -> billing_pb2.ExchangeRate:
    return billing_pb2.ExchangeRate(
        id=str(rate.id),
        base_currency=rate.base,
        quote_currency=rate.quote,
        rate=f"{rate.rate.normalize():f}",
        as_of=timestamp(rate.as_of),
        source=rate.source,
    )


def period_pb(
    period: periods.Period,
    lines: list[periods.PeriodLine],
    events: list[periods.PeriodEvent] | None = None,
) -> billing_pb2.PostpaidPeriod:
    return billing_pb2.PostpaidPeriod(
        subtotal=money(period.subtotal, period.currency),
        tax=money(period.tax, period.currency),
        events=[
            billing_pb2.PostpaidPeriodEvent(
                from_status=opt(e.from_status),
                to_status=e.to_status,
                actor_user_id=opt(e.actor),
                reason=opt(e.reason),
                time=timestamp(e.created_at),
            )
            for e in events or []
        ],
        id=str(period.id),
        client_id=str(period.client_id),
        start_time=timestamp(period.period_start),
        end_time=timestamp(period.period_end),
        status=period.status,
        total=money(period.total, period.currency),
        invoice_ref=opt(period.invoice_ref),
        due_time=timestamp(period.due_at),
        lines=[
            billing_pb2.PostpaidLine(
                item=ln.item,
                quantity=_qty(ln.quantity),
                included_quantity=_qty(ln.included),
                unit_price=money(ln.unit_price, ln.currency),
                amount=money(ln.amount, ln.currency),
            )
            for ln in lines
        ],
    )


def payment_pb(charge: fawry_store.Charge) -> billing_pb2.FawryPayment:
    return billing_pb2.FawryPayment(
        id=str(charge.id),
        client_id=str(charge.client_id),
        merchant_ref_number=charge.merchant_ref_number,
        reference_number=opt(charge.fawry_ref_number),
        payment_method=charge.payment_method,
        amount=money(charge.amount, charge.currency),
        status=charge.status,
        refunded_amount=money(charge.refunded_amount, charge.currency),
        expire_time=timestamp(charge.expires_at),
        credit_transaction_id=opt(charge.credit_transaction_id),
        create_time=timestamp(charge.created_at),
        redirect_url=opt(charge.redirect_url),
        card_id=opt(charge.card_id),
        card_last_four=opt(charge.card_last_four),
        card_brand=opt(charge.card_brand),
    )


def card_pb(card: card_store.Card) -> billing_pb2.FawryCard:
    """A saved card as the API shows it: never its token."""
    return billing_pb2.FawryCard(
        id=str(card.id),
        client_id=str(card.client_id),
        last_four=card.last_four,
        brand=card.brand,
        create_time=timestamp(card.created_at),
    )


def notification_pb(n: fawry_store.Notification) -> billing_pb2.FawryNotification:
    return billing_pb2.FawryNotification(
        id=str(n.id),
        client_id=opt(n.client_id),
        fawry_ref_number=n.fawry_ref_number,
        merchant_ref_number=opt(n.merchant_ref_number),
        order_status=n.order_status,
        signature_valid=n.signature_valid,
        outcome=opt(n.outcome),
        processing_error=opt(n.processing_error),
        receive_time=timestamp(n.received_at),
        process_time=timestamp(n.processed_at),
    )


def status_event_pb(e: ledger.StatusEvent) -> billing_pb2.ClientStatusEvent:
    return billing_pb2.ClientStatusEvent(
        from_status=e.from_status,
        to_status=e.to_status,
        suspension_reason=opt(e.reason),
        actor_user_id=opt(e.actor),
        note=opt(e.note),
        time=timestamp(e.at),
    )
