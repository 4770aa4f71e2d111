"""What billing does to a client's account, in the caller's transaction: start, change,
cancel and renew a subscription, book its charges, and settle (a paid client leaves
past_due, and a billing suspension is lifted). Used by the API and by `lifebox maintain`
alike, so a rule lives in one place. SQL is in the ``store.billing_*`` modules.

Money rules:

* A prepaid client pays a period's fee when the period starts (kind ``subscription``) and
  its metered usage when it ends (kind ``usage``); a postpaid client's period is closed at
  its end into a postpaid period (fee + usage lines, frozen) and invoiced as one ``charge``.
* Every charge books in the client's currency; a plan priced in another currency is
  converted at the rate in force at that time (the rate is recorded on the row).
* A plan change mid-period is prorated by the days left: ``(new - old) x days_left /
  days_in_period``, days counted whole (a started day counts as left), rounded half up to
  the cent; positive is charged now, negative credited now (kind ``adjustment``).
* VAT (the plan's ``tax_rate``, migration 0092): a prepaid charge under a plan is followed
  by a ``tax`` row of ``amount x rate``, half up to the cent, under the charge's reference +
  ``:vat`` (a prorated credit's VAT is credited too); a postpaid period freezes subtotal,
  rate, tax and total = subtotal + tax, and its invoice books the total.
* Each charge carries an external reference (``sub:<id>:<period start>``, ...) the ledger
  books once, so a pass that is run twice, or killed and rerun, books nothing twice.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import asyncpg

from lifebox_grpc.errors import FailedPrecondition, NotFound
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store import billing_periods as periods
from lifebox_grpc.store import billing_plans as plans
from lifebox_grpc.store import billing_subscriptions as subs
from lifebox_grpc.store import billing_usage as usage

log = logging.getLogger(__name__)

CENT = Decimal("0.01")


def vat(amount: Decimal, rate: Decimal) -> Decimal:
    """VAT on ``amount`` (signed) at ``rate``, half up (away from zero) to the cent."""
    return (amount * rate).quantize(CENT, rounding=ROUND_HALF_UP)


MAX_CATCH_UP_PERIODS = 24  # a pass renews at most this many missed periods of one subscription


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


async def _in_client_currency(
    conn: asyncpg.Connection, amount: Decimal, currency: str, client_currency: str, at: datetime
) -> tuple[Decimal, ledger.Conversion | None]:
    if currency == client_currency:
        return amount, None
    conversion = await ledger.convert(conn, amount, currency, client_currency, at)
    return conversion.converted, conversion


async def charge(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    *,
    kind: str,
    external_ref: str,
    description: str,
    at: datetime,
    actor: uuid.UUID | None = None,
    postpaid_period_id: uuid.UUID | None = None,
    tax_rate: Decimal = Decimal(0),
) -> ledger.Entry | None:
    """Book ``amount`` (positive: owed by the client) once under ``external_ref``, then its
    VAT at ``tax_rate`` (a ``tax`` row under ``external_ref:vat``); a zero amount books
    nothing. Returns the charge's row (new or already there)."""
    balance = await ledger.client_balance(conn, client_id, lock=True)
    if balance is None:
        raise NotFound("client not found")
    value, conversion = await _in_client_currency(conn, amount, currency, balance.currency, at)
    if value == 0:
        return None
    entry, _ = await ledger.book_once(
        conn,
        ledger.Booking(
            client_id=client_id,
            amount=-value,
            currency=balance.currency,
            kind=kind,
            external_ref=external_ref,
            description=description,
            conversion=conversion,
            created_by=actor,
            postpaid_period_id=postpaid_period_id,
        ),
    )
    await book_tax(
        conn, client_id, value, balance.currency, tax_rate, external_ref, description, actor
    )
    return entry


async def book_tax(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    charged: Decimal,
    currency: str,
    rate: Decimal,
    external_ref: str,
    description: str,
    actor: uuid.UUID | None,
) -> None:
    """The ``tax`` row of a charge of ``charged`` (positive owed, negative credited)."""
    tax = vat(charged, rate)
    if tax == 0:
        return
    await ledger.book_once(
        conn,
        ledger.Booking(
            client_id=client_id,
            amount=-tax,
            currency=currency,
            kind="tax",
            external_ref=f"{external_ref}:vat",
            description=f"VAT {rate * 100:f}% on {description}"[:500],
            created_by=actor,
        ),
    )


@dataclass(frozen=True)
class Settlement:
    reactivated: bool
    restored: bool
    periods_paid: int


async def settle(conn: asyncpg.Connection, client_id: uuid.UUID) -> Settlement:
    """If the client's balance is within its credit limit: past_due -> active, its invoiced
    or overdue postpaid periods paid, and a billing suspension lifted (never a staff one)."""
    balance = await ledger.client_balance(conn, client_id, lock=True)
    if balance is None or balance.balance < -balance.credit_limit:
        return Settlement(False, False, 0)
    reactivated = False
    live = await subs.live_subscription(conn, client_id, lock=True)
    if live is not None and live.status == "past_due":
        await subs.update_subscription(conn, live.id, {"status": "active", "past_due_since": None})
        reactivated = True
    paid = await periods.settle_periods(conn, client_id)
    restored = await ledger.lift_billing_suspension(conn, client_id)
    if reactivated or restored or paid:
        log.info(
            "billing settled",
            extra={"client_id": str(client_id), "reactivated": reactivated, "restored": restored},
        )
    return Settlement(reactivated, restored, paid)


async def _fall_past_due_if_owing(
    conn: asyncpg.Connection, sub: subs.Subscription, now: datetime
) -> subs.Subscription:
    balance = await ledger.client_balance(conn, sub.client_id, lock=True)
    assert balance is not None
    # A postpaid client owes its invoice until the due date: overdue marking, not the
    # balance, makes it past due (enforcement.py).
    if (
        sub.status == "active"
        and balance.billing_mode == "prepaid"
        and balance.balance < -balance.credit_limit
    ):
        return await subs.update_subscription(
            conn, sub.id, {"status": "past_due", "past_due_since": now}
        )
    return sub


async def start_subscription(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    plan: plans.Plan,
    *,
    now: datetime,
    trial_days: int,
    auto_renew: bool,
    actor: uuid.UUID | None,
) -> subs.Subscription:
    """A new live subscription; a prepaid client pays the first period now (unless trialing)."""
    if not plan.active:
        raise FailedPrecondition("this plan is retired: choose an active one")
    balance = await ledger.client_balance(conn, client_id, lock=True)
    if balance is None:
        raise NotFound("client not found")
    await subs.set_actor(conn, actor, "subscription created")
    if trial_days > 0:
        end = now + timedelta(days=trial_days)
        status = "trialing"
    else:
        end = await subs.period_end(conn, now, plan.billing_interval)
        status = "active"
    sub = await subs.create_subscription(
        conn, client_id, plan, status=status, start=now, end=end, auto_renew=auto_renew
    )
    if status == "active" and balance.billing_mode == "prepaid":
        await charge(
            conn,
            client_id,
            plan.price,
            plan.currency,
            kind="subscription",
            external_ref=f"sub:{sub.id}:{_iso(now)}",
            description=f"plan {plan.code}: {_iso(now)} - {_iso(end)}",
            at=now,
            actor=actor,
            tax_rate=plan.tax_rate,
        )
        sub = await _fall_past_due_if_owing(conn, sub, now)
    return sub


def prorated(
    old_price: Decimal, new_price: Decimal, start: datetime, end: datetime, now: datetime
) -> Decimal:
    """The price difference for the days left of [start, end) after ``now``."""
    total_days = max(1, math.ceil((end - start).total_seconds() / 86400))
    left = max(0, min(total_days, math.ceil((end - now).total_seconds() / 86400)))
    return ((new_price - old_price) * left / total_days).quantize(CENT, rounding=ROUND_HALF_UP)


async def change_plan(
    conn: asyncpg.Connection,
    sub: subs.Subscription,
    plan: plans.Plan,
    *,
    now: datetime,
    actor: uuid.UUID | None,
) -> tuple[subs.Subscription, Decimal]:
    """Move ``sub`` to ``plan`` now, prorating the rest of the period; (subscription, amount
    charged, negative when credited)."""
    if sub.status not in subs.LIVE:
        raise FailedPrecondition("this subscription has ended")
    if not plan.active:
        raise FailedPrecondition("this plan is retired: choose an active one")
    if plan.id == sub.plan_id:
        raise FailedPrecondition("the subscription is on this plan already")
    if plan.billing_interval != sub.billing_interval:
        raise FailedPrecondition("a plan change keeps the billing interval")
    balance = await ledger.client_balance(conn, sub.client_id, lock=True)
    assert balance is not None
    old_price, _ = await _in_client_currency(conn, sub.price, sub.currency, balance.currency, now)
    new_price, _ = await _in_client_currency(conn, plan.price, plan.currency, balance.currency, now)
    delta = Decimal(0)
    if sub.status != "trialing":
        delta = prorated(
            old_price, new_price, sub.current_period_start, sub.current_period_end, now
        )
    await subs.set_actor(conn, actor, f"plan {sub.plan} -> {plan.code}")
    changed = await subs.update_subscription(
        conn,
        sub.id,
        {
            "plan": plan.code,
            "plan_id": plan.id,
            "price": plan.price,
            "currency": plan.currency,
            "device_quota": plan.device_quota,
        },
    )
    if delta:
        event = await subs.latest_event_id(conn, sub.id)
        entry = ledger.Booking(
            client_id=sub.client_id,
            amount=-delta,
            currency=balance.currency,
            kind="adjustment",
            external_ref=f"plan:{sub.id}:{event}",
            description=f"plan {sub.plan} -> {plan.code}, prorated for the days left",
            created_by=actor,
        )
        await ledger.book_once(conn, entry)
        assert entry.external_ref is not None
        await book_tax(
            conn,
            sub.client_id,
            delta,
            balance.currency,
            plan.tax_rate,
            entry.external_ref,
            entry.description or "",
            actor,
        )
        if delta > 0:
            changed = await _fall_past_due_if_owing(conn, changed, now)
        else:
            await settle(conn, sub.client_id)
            changed = await subs.get_subscription(conn, sub.id, None) or changed
    return changed, delta


async def cancel(
    conn: asyncpg.Connection,
    sub: subs.Subscription,
    *,
    at_period_end: bool,
    now: datetime,
    actor: uuid.UUID | None,
    reason: str | None,
) -> subs.Subscription:
    if sub.status not in subs.LIVE:
        raise FailedPrecondition("this subscription has ended")
    await subs.set_actor(conn, actor, reason or "cancelled")
    if at_period_end:
        return await subs.update_subscription(conn, sub.id, {"cancel_at_period_end": True})
    return await subs.update_subscription(
        conn,
        sub.id,
        {"status": "cancelled", "cancelled_at": now, "ended_at": now, "past_due_since": None},
    )


async def _close_postpaid(
    conn: asyncpg.Connection,
    sub: subs.Subscription,
    balance: ledger.Balance,
    included: dict[str, Decimal],
    tax_rate: Decimal,
    due_days: int,
    now: datetime,
) -> None:
    start, end = sub.current_period_start, sub.current_period_end
    period = await periods.open_period(conn, sub.client_id, start, end, balance.currency)
    if period.status != "open":
        return
    fee, _ = await _in_client_currency(conn, sub.price, sub.currency, balance.currency, end)
    lines = [periods.PeriodLine("subscription", Decimal(1), Decimal(0), fee, fee, balance.currency)]
    for line in await usage.meter(
        conn, sub.client_id, start, end, currency=balance.currency, included=included
    ):
        unit = line.pieces[-1].unit_price if line.pieces else Decimal(0)
        lines.append(
            periods.PeriodLine(
                line.item, line.quantity, line.included, unit, line.amount, line.currency
            )
        )
    invoiced = await periods.close_and_invoice(
        conn,
        period,
        lines,
        due_at=now + timedelta(days=due_days),
        invoice_ref=f"LB-{str(sub.client_id)[:8]}-{start:%Y%m%d}",
        tax_rate=tax_rate,
        tax=vat(sum((ln.amount for ln in lines), Decimal(0)), tax_rate),
    )
    if invoiced.total > 0:
        await ledger.book_once(
            conn,
            ledger.Booking(
                client_id=sub.client_id,
                amount=-invoiced.total,
                currency=balance.currency,
                kind="charge",
                external_ref=f"period:{period.id}",
                description=f"invoice {invoiced.invoice_ref}",
                postpaid_period_id=period.id,
            ),
        )
    else:
        await periods.settle_periods(conn, sub.client_id)


async def renew(
    conn: asyncpg.Connection, subscription_id: uuid.UUID, *, now: datetime, due_days: int
) -> str:
    """Take one due subscription through every period end it has passed: cancel or expire
    it, or renew it (charges booked once); returns what was done."""
    sub = await subs.get_subscription(conn, subscription_id, None, lock=True)
    if sub is None or sub.status not in subs.LIVE or sub.current_period_end > now:
        return "nothing"
    await subs.set_actor(conn, None, "period end")
    balance = await ledger.client_balance(conn, sub.client_id, lock=True)
    assert balance is not None
    plan = await plans.get_plan(conn, sub.plan_id) if sub.plan_id else None
    included = dict(plan.included_usage) if plan else {}
    tax_rate = plan.tax_rate if plan else Decimal(0)
    done = "nothing"
    for _ in range(MAX_CATCH_UP_PERIODS):
        if sub.current_period_end > now:
            break
        start, end = sub.current_period_start, sub.current_period_end
        # The ended period's use is billed whatever happens to the subscription next.
        if sub.status != "trialing":
            if balance.billing_mode == "postpaid":
                await _close_postpaid(conn, sub, balance, included, tax_rate, due_days, now)
            else:
                lines = await usage.meter(
                    conn, sub.client_id, start, end, currency=balance.currency, included=included
                )
                total = sum((ln.amount for ln in lines), Decimal(0))
                await charge(
                    conn,
                    sub.client_id,
                    total,
                    balance.currency,
                    kind="usage",
                    external_ref=f"usage:{sub.id}:{_iso(start)}",
                    description=f"usage {_iso(start)} - {_iso(end)}",
                    at=end,
                    tax_rate=tax_rate,
                )
        if sub.cancel_at_period_end:
            sub = await subs.update_subscription(
                conn,
                sub.id,
                {
                    "status": "cancelled",
                    "cancelled_at": end,
                    "ended_at": end,
                    "past_due_since": None,
                },
            )
            return "cancelled"
        if not sub.auto_renew and sub.status != "trialing":
            sub = await subs.update_subscription(
                conn, sub.id, {"status": "expired", "ended_at": end, "past_due_since": None}
            )
            return "expired"
        new_end = await subs.period_end(conn, end, sub.billing_interval)
        changes: dict[str, object] = {"current_period_start": end, "current_period_end": new_end}
        sub = await subs.update_subscription(conn, sub.id, changes)
        if sub.status == "trialing":
            sub = await subs.update_subscription(conn, sub.id, {"status": "active"})
        if balance.billing_mode == "prepaid":
            await charge(
                conn,
                sub.client_id,
                sub.price,
                sub.currency,
                kind="subscription",
                external_ref=f"sub:{sub.id}:{_iso(end)}",
                description=f"plan {sub.plan}: {_iso(end)} - {_iso(new_end)}",
                at=end,
                tax_rate=tax_rate,
            )
        sub = await _fall_past_due_if_owing(conn, sub, now)
        done = "renewed"
    if sub.status == "active":
        await settle(conn, sub.client_id)
    return done


async def reverse(
    conn: asyncpg.Connection,
    original: ledger.Entry,
    amount: Decimal | None,
    reason: str,
    actor: uuid.UUID | None,
    *,
    kind: str,
    external_ref: str | None = None,
) -> ledger.Entry:
    """A row reversing ``amount`` (default: all that is left) of ``original``."""
    if original.status != "completed":
        raise FailedPrecondition("a failed row counts for nothing: there is nothing to reverse")
    if original.kind == "reversal":
        raise FailedPrecondition("a reversal is not reversed; book an adjustment instead")
    await ledger.client_balance(conn, original.client_id, lock=True)
    left = abs(original.amount) - abs(await ledger.reversed_total(conn, original.id))
    value = left if amount is None else amount
    if value <= 0 or value > left:
        raise FailedPrecondition(f"at most {left:f} {original.currency} of this row is left")
    sign = -1 if original.amount > 0 else 1
    entry = await ledger.book(
        conn,
        ledger.Booking(
            client_id=original.client_id,
            amount=sign * value,
            currency=original.currency,
            kind=kind,
            description=reason,
            reverses_id=original.id,
            external_ref=external_ref,
            created_by=actor,
        ),
    )
    if entry.amount > 0:
        await subs.set_actor(conn, actor, "reversal")
        await settle(conn, original.client_id)
    return entry


async def void_period(
    conn: asyncpg.Connection,
    period_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    *,
    actor: uuid.UUID | None,
    reason: str,
) -> tuple[periods.Period, ledger.Entry | None]:
    """Void an invoiced or overdue postpaid period (staff): its status becomes ``void``
    (audited with who and why by migration 0090's trigger) and what is left of its invoice's
    ``charge`` row is reversed (a ``reversal`` row pointing at it), so the client no longer
    owes it; settling then follows as for a payment. (period, reversal row or None when
    nothing was booked or all of it was reversed already)."""
    period = await periods.get_period(conn, period_id, client_filter, lock=True)
    if period is None:
        raise NotFound("postpaid period not found")
    if period.status not in ("invoiced", "overdue"):
        raise FailedPrecondition(
            f"a {period.status} period cannot be voided (only invoiced or overdue ones)"
        )
    await subs.set_actor(conn, actor, reason)
    voided = await periods.void_period(conn, period.id)
    invoice = await ledger.entry_by_ref(conn, period.client_id, "charge", f"period:{period.id}")
    reversal = None
    if invoice is not None and invoice.status == "completed":
        left = abs(invoice.amount) - abs(await ledger.reversed_total(conn, invoice.id))
        if left > 0:
            reversal = await reverse(
                conn,
                invoice,
                None,
                f"void of invoice {period.invoice_ref}: {reason}",
                actor,
                kind="reversal",
                external_ref=f"void:{period.id}",
            )
    log.info(
        "postpaid period voided",
        extra={"period_id": str(period.id), "client_id": str(period.client_id)},
    )
    return voided, reversal
