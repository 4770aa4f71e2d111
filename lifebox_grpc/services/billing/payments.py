"""BillingService: Fawry payments, refunds and stored notifications."""

from __future__ import annotations

import logging
import re
from typing import Any

from lifebox.v1 import billing_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.billing import payments
from lifebox_grpc.billing.accounts import CENT
from lifebox_grpc.errors import ErrorCollector, InvalidArgument, NotFound
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
from lifebox_grpc.services.billing.mapping import entry_pb, notification_pb, payment_pb
from lifebox_grpc.services.common import (
    check_email,
    check_text,
    page_size,
    require_uuid,
    scope_of,
    scoped,
)
from lifebox_grpc.store import billing_fawry as fawry_store

log = logging.getLogger(__name__)
_MOBILE = re.compile(r"^01[0-9]{9}$")
MAX_PAYMENT = 1_000_000


class PaymentRpcs(BillingRpcs):
    """Create, read and refund Fawry payments; list notifications."""

    async def CreateFawryPayment(
        self, request: billing_pb2.CreateFawryPaymentRequest, context: Any
    ) -> billing_pb2.CreateFawryPaymentResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        amount, currency = parse_money(errors, "amount", request.amount)
        if currency and currency != payments.FAWRY_CURRENCY:
            errors.add("amount.currency_code", "Fawry takes payments in EGP")
        if amount is not None and amount > MAX_PAYMENT:
            errors.add("amount.amount", f"at most {MAX_PAYMENT} per payment")
        if amount is not None and amount != amount.quantize(CENT):
            errors.add("amount.amount", "whole piasters (two decimals)")
        if request.customer_mobile and not _MOBILE.match(request.customer_mobile):
            errors.add("customer_mobile", "an Egyptian mobile number such as 01012345678")
        if request.customer_email:
            check_email(errors, "customer_email", request.customer_email)
        errors.raise_if_any()
        assert client_id is not None
        assert amount is not None
        async with scoped(self.pool, principal) as conn:
            await require_client(conn, principal, client_id)
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
        )
        log.info(
            "fawry payment created",
            extra={"charge_id": str(charge.id), "by": principal.describe()},
        )
        return billing_pb2.CreateFawryPaymentResponse(payment=payment_pb(charge))

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
