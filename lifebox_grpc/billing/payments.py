"""Payments through Fawry: create a charge, apply a notification once it is verified and
confirmed, refund. Shared by the API (charges, refunds) and the webhook (notifications).

A notification is only a hint. Before anything is credited: its signature must verify, the
payment status V2 query must confirm it (signed by Fawry too), and the confirmed amount,
method and merchant reference must match the charge LifeBox created. A status only moves
forward; a retry or a replay finds its first copy among verified notifications and changes
nothing. Fawry charges in EGP; a client keeping its books in another currency is credited at
the rate in force when the payment is confirmed (the rate is recorded on the row).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from lifebox_grpc.billing import accounts
from lifebox_grpc.billing.fawry import (
    ChargeRequest,
    FawryClient,
    FawryError,
    FawryRefused,
    FawryUnavailable,
    Notice,
)
from lifebox_grpc.errors import FailedPrecondition, NotFound
from lifebox_grpc.store import billing_cards as card_store
from lifebox_grpc.store import billing_fawry as fawry_store
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store import billing_subscriptions as subs
from lifebox_grpc.store.scope import Scope, scoped_transaction

log = logging.getLogger(__name__)

FAWRY_CURRENCY = "EGP"
RANK = {
    "NEW": 0,
    "PAID": 1,
    "PARTIAL_REFUNDED": 2,
    "REFUNDED": 3,
    "CANCELED": 1,
    "EXPIRED": 1,
    "FAILED": 1,
}
PAID_STATES = ("PAID", "PARTIAL_REFUNDED", "REFUNDED")
FINAL = ("CANCELED", "EXPIRED", "FAILED", "REFUNDED")


def moves_forward(current: str, new: str) -> bool:
    """Whether ``new`` is a later status than ``current`` (the migration's rule too)."""
    if current in FINAL or RANK[new] <= RANK[current]:
        return False
    return not (current == "NEW" and new in ("PARTIAL_REFUNDED", "REFUNDED"))


def new_merchant_ref() -> str:
    return "LB" + secrets.token_hex(10)


async def create_payment(
    pool: asyncpg.Pool,
    fawry: FawryClient,
    scope: Scope,
    *,
    client_id: uuid.UUID,
    amount: Decimal,
    customer_mobile: str | None,
    customer_email: str | None,
    actor: uuid.UUID | None,
    expiry_hours: int,
    card: card_store.Card | None = None,
) -> fawry_store.Charge:
    """A PAYATFAWRY charge, or (``card``) a charge of a card saved at Fawry by its token:
    stored first (so its notification can always be matched), then created at Fawry, then
    its reference number recorded. A card charge Fawry says is paid is confirmed with the
    status query and credited at once; one that needs a 3-D Secure step keeps Fawry's URL
    for the payer and is credited when its notification comes."""
    method = "CARD" if card else "PAYATFAWRY"
    expires = datetime.now(UTC) + timedelta(hours=expiry_hours)
    merchant_ref = new_merchant_ref()
    description = f"LifeBox credit {merchant_ref}"
    profile = card.customer_profile_id if card else str(client_id)
    async with pool.acquire() as conn, scoped_transaction(conn, scope):
        charge = await fawry_store.create_charge(
            conn,
            client_id=client_id,
            merchant_ref_number=merchant_ref,
            payment_method=method,
            amount=amount,
            currency=FAWRY_CURRENCY,
            customer_profile_id=profile,
            description=description,
            expires_at=None if card else expires,
            created_by=actor,
            card=card,
        )
    request = ChargeRequest(
        merchant_ref_num=merchant_ref,
        customer_profile_id=profile,
        payment_method=method,
        amount=amount,
        currency=FAWRY_CURRENCY,
        description=description,
        expiry_epoch_ms=None if card else int(expires.timestamp() * 1000),
        card_token=card.token if card else None,
        customer_mobile=customer_mobile,
        customer_email=customer_email,
    )
    async with _fawry_call(pool, scope, charge):
        answer = await fawry.charge(request)
    async with pool.acquire() as conn, scoped_transaction(conn, scope):
        charge = await fawry_store.set_reference(
            conn, charge.id, answer.reference_number, answer.redirect_url
        )
    if card and answer.redirect_url is None and answer.order_status in PAID_STATES:
        return await confirm_charge(pool, fawry, charge)
    return charge


async def create_checkout(
    pool: asyncpg.Pool,
    fawry: FawryClient,
    scope: Scope,
    *,
    client_id: uuid.UUID,
    amount: Decimal,
    return_url: str,
    customer_mobile: str | None,
    customer_email: str | None,
    actor: uuid.UUID | None,
    expiry_hours: int,
) -> fawry_store.Charge:
    """A card payment on Fawry's own hosted page (FawryPay Express Checkout): the charge is
    stored, Fawry gives the page's URL, the payer enters the card there (no card data ever
    reaches LifeBox) and may save it under the client's profile; Fawry's server notification
    V2, confirmed by the status query, credits it. ``return_url`` is only where Fawry sends
    the payer's browser afterwards: nothing arriving there is trusted."""
    expires = datetime.now(UTC) + timedelta(hours=expiry_hours)
    merchant_ref = new_merchant_ref()
    description = f"LifeBox credit {merchant_ref}"
    async with pool.acquire() as conn, scoped_transaction(conn, scope):
        charge = await fawry_store.create_charge(
            conn,
            client_id=client_id,
            merchant_ref_number=merchant_ref,
            payment_method="CARD",
            amount=amount,
            currency=FAWRY_CURRENCY,
            customer_profile_id=str(client_id),
            description=description,
            expires_at=expires,
            created_by=actor,
            checkout=True,
        )
    async with _fawry_call(pool, scope, charge):
        url = await fawry.checkout_link(
            merchant_ref_num=merchant_ref,
            customer_profile_id=str(client_id),
            amount=amount,
            description=description,
            return_url=return_url,
            expiry_epoch_ms=int(expires.timestamp() * 1000),
            customer_mobile=customer_mobile,
            customer_email=customer_email,
        )
    async with pool.acquire() as conn, scoped_transaction(conn, scope):
        return await fawry_store.set_reference(conn, charge.id, None, url)


@contextlib.asynccontextmanager
async def _fawry_call(
    pool: asyncpg.Pool, scope: Scope, charge: fawry_store.Charge
) -> AsyncIterator[None]:
    """Fawry's refusal fails the stored charge (FAILED_PRECONDITION); Fawry unreachable
    leaves it NEW without a reference (it may exist at Fawry: a notification naming it is
    still matched and confirmed)."""
    try:
        yield
    except FawryRefused as exc:
        async with pool.acquire() as conn, scoped_transaction(conn, scope):
            await fawry_store.update_charge(conn, charge.id, {"status": "FAILED"})
        log.warning(
            "fawry refused a charge",
            extra={"charge_id": str(charge.id), "code": str(exc.status_code)},
        )
        raise FailedPrecondition(f"Fawry refused the payment: {exc.description}") from exc
    except FawryUnavailable as exc:
        log.warning("fawry unavailable for a charge", extra={"charge_id": str(charge.id)})
        raise FailedPrecondition("Fawry could not be reached: try again shortly") from exc


async def confirm_charge(
    pool: asyncpg.Pool, fawry: FawryClient, charge: fawry_store.Charge
) -> fawry_store.Charge:
    """Ask Fawry's status query about ``charge`` and apply what it confirms (a card charge
    answered at once). If Fawry cannot confirm it now, it stays as it is: the server
    notification that follows is confirmed and applied the usual way."""
    try:
        confirmed = await fawry.status(charge.merchant_ref_number)
    except FawryError:
        log.warning("fawry status unconfirmed after a charge", extra={"charge_id": str(charge.id)})
        return charge
    async with pool.acquire() as conn, scoped_transaction(conn, Scope.staff()):
        locked = await fawry_store.charge_by_merchant_ref(
            conn, charge.merchant_ref_number, lock=True
        )
        assert locked is not None
        problem = _mismatch(locked, confirmed, confirmed)
        if problem is None:
            await _book(conn, locked, confirmed, None)
        else:
            log.warning(
                "fawry status does not match a charge",
                extra={"charge_id": str(charge.id), "error": problem},
            )
        updated = await fawry_store.get_charge(conn, charge.id, None)
    assert updated is not None
    return updated


@dataclass(frozen=True)
class Outcome:
    """What the webhook answers: HTTP status and a word for logs and metrics."""

    http_status: int
    outcome: str


async def apply_notification(
    pool: asyncpg.Pool, fawry: FawryClient, notice: Notice, raw_body: str
) -> Outcome:
    """Store, verify, confirm and apply one notification; the HTTP status is 200 only once
    whatever it changed has committed (Fawry retries anything else)."""
    verified = fawry.verify(notice)
    async with pool.acquire() as conn, scoped_transaction(conn, Scope.staff()):
        stored = await fawry_store.record_notification(
            conn,
            raw_body=raw_body,
            fawry_ref_number=notice.fawry_ref_number,
            merchant_ref_number=notice.merchant_ref_number,
            order_status=notice.order_status,
            order_amount=notice.order_amount,
            payment_amount=notice.payment_amount,
            fawry_fees=notice.fawry_fees,
            payment_method=notice.payment_method,
            signature_valid=verified,
            outcome=None if verified else "bad_signature",
        )
    if not verified:
        return Outcome(400, "bad_signature")
    if stored.duplicate and stored.processed:
        return Outcome(200, "duplicate")
    async with pool.acquire() as conn, scoped_transaction(conn, Scope.staff()):
        if await fawry_store.charge_by_merchant_ref(conn, notice.merchant_ref_number) is None:
            # Not a charge of ours: nothing to confirm, nothing Fawry's retry could change.
            if not await fawry_store.lock_notification(conn, stored.id):
                return Outcome(200, "duplicate")
            return await _finish(
                conn, stored.id, None, "unknown_merchant_ref", "no charge has this reference"
            )
    try:
        confirmed = await fawry.status(notice.merchant_ref_number)
    except FawryError as exc:
        async with pool.acquire() as conn, scoped_transaction(conn, Scope.staff()):
            await fawry_store.note_failure(conn, stored.id, f"status query failed: {exc}")
        return Outcome(503, "unconfirmed")
    async with pool.acquire() as conn, scoped_transaction(conn, Scope.staff()):
        if not await fawry_store.lock_notification(conn, stored.id):
            return Outcome(200, "duplicate")
        result = await _apply(conn, stored.id, notice, confirmed)
    return result


async def _finish(
    conn: asyncpg.Connection,
    notification_id: uuid.UUID,
    charge: fawry_store.Charge | None,
    outcome: str,
    error: str | None = None,
) -> Outcome:
    await fawry_store.finish_notification(
        conn,
        notification_id,
        client_id=charge.client_id if charge else None,
        charge_id=charge.id if charge else None,
        outcome=outcome,
        error=error,
    )
    if error:
        log.warning(
            "fawry notification not applied",
            extra={"notification_id": str(notification_id), "outcome": outcome, "error": error},
        )
    return Outcome(200, outcome)


def _mismatch(charge: fawry_store.Charge, notice: Notice, confirmed: Notice) -> str | None:
    """Why ``notice`` (as ``confirmed`` by the status query) cannot be this charge's."""
    if confirmed.merchant_ref_number != charge.merchant_ref_number:
        return "the status query named another merchant reference"
    if confirmed.fawry_ref_number != notice.fawry_ref_number or (
        charge.fawry_ref_number is not None and charge.fawry_ref_number != notice.fawry_ref_number
    ):
        return "the Fawry reference number differs from the charge's"
    if notice.order_amount != charge.amount or confirmed.order_amount != charge.amount:
        return (
            f"amount {notice.order_amount:f} (confirmed {confirmed.order_amount:f}) differs "
            f"from the charge's {charge.amount:f}"
        )
    if charge.currency != FAWRY_CURRENCY:
        return f"the charge is in {charge.currency}, Fawry pays {FAWRY_CURRENCY}"
    return None


async def _apply(
    conn: asyncpg.Connection, notification_id: uuid.UUID, notice: Notice, confirmed: Notice
) -> Outcome:
    charge = await fawry_store.charge_by_merchant_ref(conn, notice.merchant_ref_number, lock=True)
    if charge is None:
        return await _finish(
            conn, notification_id, None, "unknown_merchant_ref", "no charge has this reference"
        )
    mismatch = _mismatch(charge, notice, confirmed)
    if mismatch:
        outcome = "amount_mismatch" if mismatch.startswith("amount") else "mismatch"
        return await _finish(conn, notification_id, charge, outcome, mismatch)
    if RANK[confirmed.order_status] < RANK[notice.order_status]:
        # Fawry's own status has not caught up with its notification: answer 503 so the
        # retry comes back (the notification stays unprocessed, its error noted).
        await fawry_store.note_failure(
            conn,
            notification_id,
            f"notified {notice.order_status}, confirmed {confirmed.order_status}",
        )
        return Outcome(503, "unconfirmed")
    charge, outcome = await _book(conn, charge, confirmed, notification_id)
    return await _finish(conn, notification_id, charge, outcome)


async def _book(
    conn: asyncpg.Connection,
    charge: fawry_store.Charge,
    confirmed: Notice,
    notification_id: uuid.UUID | None,
) -> tuple[fawry_store.Charge, str]:
    """Apply the status Fawry confirmed to a locked, matching charge: credit a payment once,
    book the rest of a full refund made at Fawry, move the status forward."""
    status = confirmed.order_status
    fawry_ref = confirmed.fawry_ref_number
    changes: dict[str, object] = {}
    if charge.fawry_ref_number is None:  # a hosted checkout learns it from Fawry's answer
        changes["fawry_ref_number"] = fawry_ref
    outcome = "no_change"
    if status in PAID_STATES and charge.credit_transaction_id is None:
        balance = await ledger.client_balance(conn, charge.client_id, lock=True)
        assert balance is not None
        amount, conversion = charge.amount, None
        if balance.currency != charge.currency:
            conversion = await ledger.convert(
                conn, charge.amount, charge.currency, balance.currency, datetime.now(UTC)
            )
            amount = conversion.converted
        entry, _ = await ledger.book_once(
            conn,
            ledger.Booking(
                client_id=charge.client_id,
                amount=amount,
                currency=balance.currency,
                kind="topup",
                external_ref=fawry_ref,
                description=f"Fawry {charge.payment_method} {fawry_ref}",
                fawry_notification_id=notification_id,
                conversion=conversion,
            ),
        )
        changes.update(credit_transaction_id=entry.id, paid_amount=charge.amount)
        outcome = "credited"
        charge = fawry_store.Charge(**{**charge.__dict__, "credit_transaction_id": entry.id})
    if status == "REFUNDED" and charge.credit_transaction_id is not None:
        paid = charge.paid_amount if charge.paid_amount is not None else charge.amount
        left = paid - charge.refunded_amount
        if left > 0:
            topup = await ledger.get_entry(conn, charge.credit_transaction_id, None)
            assert topup is not None
            await accounts.reverse(
                conn,
                topup,
                None,
                f"refunded at Fawry {fawry_ref}",
                None,
                kind="refund",
                external_ref=f"fawry-refund:{fawry_ref}:rest",
            )
            changes["refunded_amount"] = paid
            outcome = "refunded"
    if moves_forward(charge.status, status):
        changes["status"] = status
    if changes:
        charge = await fawry_store.update_charge(conn, charge.id, changes)
    await subs.set_actor(conn, None, f"Fawry payment {fawry_ref}")
    if outcome == "credited":
        await accounts.settle(conn, charge.client_id)
    log.info(
        "fawry payment applied",
        extra={"charge_id": str(charge.id), "status": status, "outcome": outcome},
    )
    return charge, outcome


async def refund_payment(
    pool: asyncpg.Pool,
    fawry: FawryClient,
    scope: Scope,
    *,
    charge_id: uuid.UUID,
    amount: Decimal | None,
    reason: str | None,
    actor: uuid.UUID | None,
) -> tuple[fawry_store.Charge, ledger.Entry]:
    """Refund ``amount`` (default: all that is left) of a paid charge: in one transaction
    holding the charge's lock, ask Fawry, then book the reversal and move the status."""
    async with pool.acquire() as conn, scoped_transaction(conn, scope):
        charge = await fawry_store.get_charge(conn, charge_id, scope.client_filter, lock=True)
        if charge is None:
            raise NotFound("payment not found")
        if (
            charge.status not in ("PAID", "PARTIAL_REFUNDED")
            or charge.credit_transaction_id is None
        ):
            raise FailedPrecondition(f"a {charge.status} payment cannot be refunded")
        paid = charge.paid_amount or charge.amount
        left = paid - charge.refunded_amount
        value = left if amount is None else amount
        if value <= 0 or value > left:
            raise FailedPrecondition(f"at most {left:f} {charge.currency} is left to refund")
        assert charge.fawry_ref_number is not None
        topup = await ledger.get_entry(conn, charge.credit_transaction_id, None)
        assert topup is not None
        # The ledger row is in the client's currency: refund the same share of it.
        share = (topup.amount * value / paid).quantize(accounts.CENT)
        try:
            await fawry.refund(charge.fawry_ref_number, value, reason)
        except FawryRefused as exc:
            raise FailedPrecondition(f"Fawry refused the refund: {exc.description}") from exc
        except FawryUnavailable as exc:
            raise FailedPrecondition("Fawry could not be reached: try again shortly") from exc
        refunded = charge.refunded_amount + value
        entry = await accounts.reverse(
            conn,
            topup,
            share,
            reason or f"refund of Fawry {charge.fawry_ref_number}",
            actor,
            kind="refund",
            external_ref=f"fawry-refund:{charge.fawry_ref_number}:{refunded:f}",
        )
        updated = await fawry_store.update_charge(
            conn,
            charge.id,
            {
                "refunded_amount": refunded,
                "status": "REFUNDED" if refunded == paid else "PARTIAL_REFUNDED",
            }
            if moves_forward(charge.status, "REFUNDED" if refunded == paid else "PARTIAL_REFUNDED")
            else {"refunded_amount": refunded},
        )
    return updated, entry
