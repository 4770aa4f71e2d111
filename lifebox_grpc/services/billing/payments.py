"""BillingService: Fawry payments, refunds and stored notifications."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from lifebox.v1 import billing_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.billing import payments
from lifebox_grpc.billing.accounts import CENT
from lifebox_grpc.billing.fawry import FawryRefused, FawryUnavailable
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition, InvalidArgument, NotFound
from lifebox_grpc.services.billing.base import (
    BillingRpcs,
    parse_amount,
    parse_client,
    parse_money,
    require_billing_pay,
    require_billing_write,
    require_client,
    time_page_key,
    time_page_token,
)
from lifebox_grpc.services.billing.mapping import card_pb, entry_pb, notification_pb, payment_pb
from lifebox_grpc.services.common import (
    check_email,
    check_text,
    page_size,
    parse_uuid,
    require_uuid,
    scope_of,
    scoped,
)
from lifebox_grpc.store import billing_cards as card_store
from lifebox_grpc.store import billing_fawry as fawry_store

log = logging.getLogger(__name__)
_MOBILE = re.compile(r"^01[0-9]{9}$")
MAX_PAYMENT = 1_000_000


def _check_payment(
    errors: ErrorCollector, amount: Any, currency: str, mobile: str, email: str
) -> None:
    """What every Fawry payment request shares: EGP, whole piasters, a bound, the payer."""
    if currency and currency != payments.FAWRY_CURRENCY:
        errors.add("amount.currency_code", "Fawry takes payments in EGP")
    if amount is not None and amount > MAX_PAYMENT:
        errors.add("amount.amount", f"at most {MAX_PAYMENT} per payment")
    if amount is not None and amount != amount.quantize(CENT):
        errors.add("amount.amount", "whole piasters (two decimals)")
    if mobile and not _MOBILE.match(mobile):
        errors.add("customer_mobile", "an Egyptian mobile number such as 01012345678")
    if email:
        check_email(errors, "customer_email", email)


def _check_return_url(errors: ErrorCollector, value: str) -> None:
    """Where Fawry sends the payer back: https, or http on this machine (development)."""
    if not value:
        errors.add("return_url", "required")
        return
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    local = parts is not None and parts.hostname in ("localhost", "127.0.0.1")
    if (
        parts is None
        or len(value) > 1000
        or not parts.hostname
        or not (parts.scheme == "https" or (parts.scheme == "http" and local))
    ):
        errors.add("return_url", "an https URL (http only on localhost)")


class PaymentRpcs(BillingRpcs):
    """Create, read and refund Fawry payments; list notifications."""

    async def CreateFawryPayment(
        self, request: billing_pb2.CreateFawryPaymentRequest, context: Any
    ) -> billing_pb2.CreateFawryPaymentResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        amount, currency = parse_money(errors, "amount", request.amount)
        _check_payment(errors, amount, currency, request.customer_mobile, request.customer_email)
        card_id = parse_uuid(errors, "card_id", request.card_id) if request.card_id else None
        errors.raise_if_any()
        assert client_id is not None
        assert amount is not None
        card = None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
            if card_id is not None:
                card = await card_store.get_card(conn, card_id, client_id)
                if card is None:
                    raise NotFound("card not found")
            require_billing_pay(principal)
        charge = await payments.create_payment(
            self.pool,
            self.fawry(),
            scope_of(principal),
            client_id=client_id,
            amount=amount,
            customer_mobile=request.customer_mobile or None,
            customer_email=request.customer_email or None,
            actor=principal.user_id,
            expiry_hours=self.settings.fawry_payment_expiry_hours,
            card=card,
        )
        log.info(
            "fawry payment created",
            extra={"charge_id": str(charge.id), "by": principal.describe()},
        )
        return billing_pb2.CreateFawryPaymentResponse(payment=payment_pb(charge))

    async def CreateFawryCardCheckout(
        self, request: billing_pb2.CreateFawryCardCheckoutRequest, context: Any
    ) -> billing_pb2.CreateFawryCardCheckoutResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        amount, currency = parse_money(errors, "amount", request.amount)
        _check_payment(errors, amount, currency, request.customer_mobile, request.customer_email)
        _check_return_url(errors, request.return_url)
        errors.raise_if_any()
        assert client_id is not None
        assert amount is not None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
            require_billing_pay(principal)
        charge = await payments.create_checkout(
            self.pool,
            self.fawry(),
            scope_of(principal),
            client_id=client_id,
            amount=amount,
            return_url=request.return_url,
            customer_mobile=request.customer_mobile or None,
            customer_email=request.customer_email or None,
            actor=principal.user_id,
            expiry_hours=self.settings.fawry_payment_expiry_hours,
        )
        log.info(
            "fawry card checkout created",
            extra={"charge_id": str(charge.id), "by": principal.describe()},
        )
        return billing_pb2.CreateFawryCardCheckoutResponse(payment=payment_pb(charge))

    async def ListFawryCards(
        self, request: billing_pb2.ListFawryCardsRequest, context: Any
    ) -> billing_pb2.ListFawryCardsResponse:
        """Fawry's List Card Tokens is the truth: each call asks it and makes the stored
        cards match; when Fawry cannot be reached, the cards last seen are returned."""
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
        profile = str(client_id)
        try:
            found = await self.fawry().list_cards(profile)
        except FawryUnavailable:
            log.warning("fawry card list unavailable", extra={"client_id": profile})
            found = None
        except FawryRefused as exc:
            raise FailedPrecondition(f"Fawry refused the card list: {exc.description}") from exc
        async with scoped(self.pool, principal) as conn:
            if found is None:
                cards = await card_store.list_cards(conn, client_id)
            else:
                cards = await card_store.sync_cards(
                    conn, client_id, profile, [(c.token, c.last_four, c.brand) for c in found]
                )
        return billing_pb2.ListFawryCardsResponse(cards=[card_pb(c) for c in cards])

    async def DeleteFawryCard(
        self, request: billing_pb2.DeleteFawryCardRequest, context: Any
    ) -> billing_pb2.DeleteFawryCardResponse:
        principal = require_principal()
        card_id: uuid.UUID = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            card = await card_store.get_card(conn, card_id, principal.client_id)
            if card is None:
                raise NotFound("card not found")
            require_billing_pay(principal)
        try:
            await self.fawry().delete_card(card.customer_profile_id, card.token)
        except FawryRefused as exc:
            raise FailedPrecondition(
                f"Fawry refused to delete the card: {exc.description}"
            ) from exc
        except FawryUnavailable as exc:
            raise FailedPrecondition("Fawry could not be reached: try again shortly") from exc
        async with scoped(self.pool, principal) as conn:
            await card_store.delete_card(conn, card.id)
        log.info("fawry card deleted", extra={"card_id": str(card.id), "by": principal.describe()})
        return billing_pb2.DeleteFawryCardResponse()

    async def GetFawryPayment(
        self, request: billing_pb2.GetFawryPaymentRequest, context: Any
    ) -> billing_pb2.GetFawryPaymentResponse:
        principal = require_principal()
        charge_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            charge = await fawry_store.get_charge(conn, charge_id, principal.client_id)
        if charge is None:
            raise NotFound("payment not found")
        return billing_pb2.GetFawryPaymentResponse(payment=payment_pb(charge))

    async def ListFawryPayments(
        self, request: billing_pb2.ListFawryPaymentsRequest, context: Any
    ) -> billing_pb2.ListFawryPaymentsResponse:
        page, token = await self.client_page(
            request.client_id,
            request.page_size,
            request.page_token,
            fawry_store.list_charges,
            lambda c: (c.created_at, c.id),
        )
        return billing_pb2.ListFawryPaymentsResponse(
            payments=[payment_pb(c) for c in page], next_page_token=token
        )

    async def RefundFawryPayment(
        self, request: billing_pb2.RefundFawryPaymentRequest, context: Any
    ) -> billing_pb2.RefundFawryPaymentResponse:
        principal = require_principal()
        errors = ErrorCollector()
        charge_id = require_uuid("id", request.id)
        amount = parse_amount(errors, "amount", request.amount) if request.amount else None
        check_text(errors, "reason", request.reason, max_length=200, required=False)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            found = await fawry_store.get_charge(conn, charge_id, principal.client_id)
            if found is None:
                raise NotFound("payment not found")
            require_billing_write(principal)
        if amount is not None and amount != amount.quantize(CENT):
            raise InvalidArgument.field("amount", "whole piasters (two decimals)")
        charge, entry = await payments.refund_payment(
            self.pool,
            self.fawry(),
            scope_of(principal),
            charge_id=charge_id,
            amount=amount,
            reason=request.reason or None,
            actor=principal.user_id,
        )
        log.info(
            "fawry payment refunded",
            extra={"charge_id": str(charge.id), "by": principal.describe()},
        )
        return billing_pb2.RefundFawryPaymentResponse(
            payment=payment_pb(charge), credit_transaction=entry_pb(entry)
        )

    async def ListFawryNotifications(
        self, request: billing_pb2.ListFawryNotificationsRequest, context: Any
    ) -> billing_pb2.ListFawryNotificationsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        key = time_page_key(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await fawry_store.list_notifications(
                conn, principal.client_id, before=key, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        return billing_pb2.ListFawryNotificationsResponse(
            notifications=[notification_pb(n) for n in page],
            next_page_token=time_page_token(page[-1].received_at, page[-1].id) if more else "",
        )
