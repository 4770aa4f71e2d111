"""BillingService: the billing account, the credit ledger and exchange rates."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from lifebox.v1 import billing_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.billing import accounts
from lifebox_grpc.errors import ErrorCollector, InvalidArgument, NotFound
from lifebox_grpc.services.billing.base import (
    BillingRpcs,
    check_currency,
    money,
    parse_amount,
    parse_client,
    parse_money,
    require_billing_write,
    require_client,
    time_page_key,
    time_page_token,
)
from lifebox_grpc.services.billing.mapping import entry_pb, rate_pb, status_event_pb
from lifebox_grpc.services.common import check_text, page_size, parse_uuid, scoped
from lifebox_grpc.store import billing_ledger as ledger
from lifebox_grpc.store import billing_subscriptions as sub_store

log = logging.getLogger(__name__)


class LedgerRpcs(BillingRpcs):
    """The account, its ledger, adjustments, reversals and exchange rates."""

    async def GetBillingAccount(
        self, request: billing_pb2.GetBillingAccountRequest, context: Any
    ) -> billing_pb2.GetBillingAccountResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            account = await require_client(conn, principal, client_id)
            events = await ledger.list_status_events(conn, client_id)
        return billing_pb2.GetBillingAccountResponse(
            client_id=str(client_id),
            balance=money(account.balance, account.currency),
            credit_limit=money(account.credit_limit, account.currency),
            billing_mode=account.billing_mode,
            status=account.status,
            suspension_reason=account.suspension_reason or "",
            status_events=[status_event_pb(e) for e in events],
        )

    async def ListCreditTransactions(
        self, request: billing_pb2.ListCreditTransactionsRequest, context: Any
    ) -> billing_pb2.ListCreditTransactionsResponse:
        page, token = await self.client_page(
            request.client_id,
            request.page_size,
            request.page_token,
            ledger.list_entries,
            lambda e: (e.created_at, e.id),
        )
        return billing_pb2.ListCreditTransactionsResponse(
            credit_transactions=[entry_pb(e) for e in page], next_page_token=token
        )

    async def CreateCreditAdjustment(
        self, request: billing_pb2.CreateCreditAdjustmentRequest, context: Any
    ) -> billing_pb2.CreateCreditAdjustmentResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = parse_client(errors, principal, request.client_id)
        amount, currency = parse_money(errors, "amount", request.amount, sign="nonzero")
        check_text(errors, "description", request.description, max_length=500)
        errors.raise_if_any()
        assert client_id is not None
        assert amount is not None
        now = datetime.now(UTC)
        async with scoped(self.pool, principal) as conn:
            account = await require_client(conn, principal, client_id)
            require_billing_write(principal)
            conversion = None
            booked = amount
            if currency != account.currency:
                conversion = await ledger.convert(conn, amount, currency, account.currency, now)
                booked = conversion.converted
                if booked == 0:
                    raise InvalidArgument.field("amount.amount", "converts to zero")
            entry = await ledger.book(
                conn,
                ledger.Booking(
                    client_id=client_id,
                    amount=booked,
                    currency=account.currency,
                    kind="adjustment",
                    description=request.description,
                    conversion=conversion,
                    created_by=principal.user_id,
                ),
            )
            if booked > 0:
                await sub_store.set_actor(conn, principal.user_id, "credit adjustment")
                await accounts.settle(conn, client_id)
        log.info(
            "credit adjustment",
            extra={"client_id": str(client_id), "entry": str(entry.id), "by": principal.describe()},
        )
        return billing_pb2.CreateCreditAdjustmentResponse(credit_transaction=entry_pb(entry))

    async def ReverseCreditTransaction(
        self, request: billing_pb2.ReverseCreditTransactionRequest, context: Any
    ) -> billing_pb2.ReverseCreditTransactionResponse:
        principal = require_principal()
        errors = ErrorCollector()
        entry_id = parse_uuid(errors, "id", request.id)
        amount = parse_amount(errors, "amount", request.amount) if request.amount else None
        check_text(errors, "reason", request.reason, max_length=500)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            original = await ledger.get_entry(conn, entry_id, principal.client_id)
            if original is None:
                raise NotFound("credit transaction not found")
            require_billing_write(principal)
            reversal = await accounts.reverse(
                conn, original, amount, request.reason, principal.user_id, kind="reversal"
            )
        log.info(
            "credit transaction reversed",
            extra={"entry": str(original.id), "by": principal.describe()},
        )
        return billing_pb2.ReverseCreditTransactionResponse(credit_transaction=entry_pb(reversal))

    async def CreateExchangeRate(
        self, request: billing_pb2.CreateExchangeRateRequest, context: Any
    ) -> billing_pb2.CreateExchangeRateResponse:
        principal = require_principal()
        require_billing_write(principal)
        errors = ErrorCollector()
        r = request.rate
        check_currency(errors, "rate.base_currency", r.base_currency)
        check_currency(errors, "rate.quote_currency", r.quote_currency)
        if r.base_currency == r.quote_currency:
            errors.add("rate.quote_currency", "must differ from base_currency")
        rate = parse_amount(errors, "rate.rate", r.rate)
        check_text(errors, "rate.source", r.source, max_length=100)
        errors.raise_if_any()
        assert rate is not None
        as_of = r.as_of.ToDatetime(UTC) if r.HasField("as_of") else datetime.now(UTC)
        async with scoped(self.pool, principal) as conn:
            stored = await ledger.create_rate(
                conn, r.base_currency, r.quote_currency, rate, as_of, r.source
            )
        log.info(
            "exchange rate recorded", extra={"rate": str(stored.id), "by": principal.describe()}
        )
        return billing_pb2.CreateExchangeRateResponse(rate=rate_pb(stored))

    async def ListExchangeRates(
        self, request: billing_pb2.ListExchangeRatesRequest, context: Any
    ) -> billing_pb2.ListExchangeRatesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        if request.base_currency:
            check_currency(errors, "base_currency", request.base_currency)
        if request.quote_currency:
            check_currency(errors, "quote_currency", request.quote_currency)
        size = page_size(errors, request.page_size)
        key = time_page_key(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await ledger.list_rates(
                conn,
                base=request.base_currency or None,
                quote=request.quote_currency or None,
                before=key,
                limit=size + 1,
            )
        page, more = rows[:size], len(rows) > size
        return billing_pb2.ListExchangeRatesResponse(
            rates=[rate_pb(r) for r in page],
            next_page_token=time_page_token(page[-1].as_of, page[-1].id) if more else "",
        )
