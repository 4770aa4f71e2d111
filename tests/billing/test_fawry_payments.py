"""PAYATFAWRY end to end against the fake Fawry: a reference number, a notification that is
verified, confirmed with the status query and credited once; and hostile webhooks that
credit nothing."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import grpc
import pytest

from lifebox.v1 import billing_pb2, common_pb2
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.billing import egp, ledger_state, stub, webhook_url
from tests.helpers.fawry_fake import FakeCharge, FakeFawry, post
from tests.helpers.grpc import Account, Server, Tenant, make_staff, make_tenant


async def _pay_request(server: Server, tenant: Tenant, amount: str) -> billing_pb2.FawryPayment:
    reply = await stub(server).CreateFawryPayment(
        billing_pb2.CreateFawryPaymentRequest(amount=egp(amount), customer_mobile="01012345678"),
        metadata=tenant.users["client"].md,
    )
    payment: billing_pb2.FawryPayment = reply.payment
    return payment


async def _notifications(conn: asyncpg.Connection, ref: str) -> list[asyncpg.Record]:
    async with tenant_transaction(conn, None, staff=True):
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT order_status, signature_valid, outcome, processing_error, processed_at "
            "FROM fawry_payment_notifications WHERE fawry_ref_number = $1 ORDER BY received_at",
            ref,
        )
    return rows


async def _balance(conn: asyncpg.Connection, client: uuid.UUID) -> Decimal:
    balance, total, _ = await ledger_state(conn, client)
    assert balance == total
    return balance


@pytest.fixture
async def tenant(billing_server: Server, owner_conn: asyncpg.Connection) -> Tenant:
    return await make_tenant(billing_server, owner_conn)


@pytest.fixture
async def staff(billing_server: Server, owner_conn: asyncpg.Connection) -> Account:
    return await make_staff(billing_server, owner_conn, "admin")


async def test_a_payatfawry_payment_notified_twice_is_confirmed_and_credited_once(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    payment = await _pay_request(billing_server, tenant, "840.00")
    assert payment.status == "NEW"
    assert payment.reference_number
    assert payment.payment_method == "PAYATFAWRY"
    charge = fawry.pay(payment.merchant_ref_number)
    queries = fawry.status_queries
    url = webhook_url(billing_server)
    assert await fawry.notify(url, charge) == 200
    assert await fawry.notify(url, charge) == 200
    assert fawry.status_queries == queries + 1  # confirmed once
    assert await _balance(owner_conn, tenant.client_id) == Decimal("840.00")
    got = await stub(billing_server).GetFawryPayment(
        billing_pb2.GetFawryPaymentRequest(id=payment.id), metadata=tenant.users["client"].md
    )
    assert got.payment.status == "PAID"
    assert got.payment.credit_transaction_id
    rows = await stub(billing_server).ListCreditTransactions(
        billing_pb2.ListCreditTransactionsRequest(), metadata=tenant.users["client"].md
    )
    assert [(t.kind, t.amount.amount) for t in rows.credit_transactions] == [
        (billing_pb2.CREDIT_TRANSACTION_KIND_TOPUP, "840.0000")
    ]
    assert rows.credit_transactions[0].external_ref == payment.reference_number


async def test_a_forged_notification_stored_first_never_blocks_the_genuine_one(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    payment = await _pay_request(billing_server, tenant, "100.25")
    charge = fawry.pay(payment.merchant_ref_number)
    url = webhook_url(billing_server)
    assert await fawry.notify(url, charge, bad_signature=True) == 400
    assert await _balance(owner_conn, tenant.client_id) == 0
    assert await fawry.notify(url, charge) == 200
    assert await _balance(owner_conn, tenant.client_id) == Decimal("100.25")
    stored = await _notifications(owner_conn, charge.reference)
    assert [(r["signature_valid"], r["outcome"]) for r in stored] == [
        (False, "bad_signature"),
        (True, "credited"),
    ]


async def test_an_amount_mismatch_is_stored_with_its_reason_and_credits_nothing(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    payment = await _pay_request(billing_server, tenant, "50.00")
    charge = fawry.pay(payment.merchant_ref_number)
    status = await fawry.notify(webhook_url(billing_server), charge, order_amount=Decimal(5000))
    assert status == 200
    assert await _balance(owner_conn, tenant.client_id) == 0
    (row,) = await _notifications(owner_conn, charge.reference)
    assert row["outcome"] == "amount_mismatch"
    assert "differs" in row["processing_error"]


async def test_an_unknown_merchant_reference_is_stored_and_credits_nothing(
    billing_server: Server, fawry: FakeFawry, owner_conn: asyncpg.Connection
) -> None:
    stranger = FakeCharge("LBnot-ours-0001", "555000111", Decimal(10), "PAYATFAWRY", "PAID")
    assert await fawry.notify(webhook_url(billing_server), stranger) == 200
    (row,) = await _notifications(owner_conn, "555000111")
    assert row["outcome"] == "unknown_merchant_ref"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", 400),
        (b'{"fawryRefNumber": "1"}', 400),
        (b"[" * 5000 + b"]" * 5000, 400),
        (b"x" * (1024 * 1024), 413),
    ],
    ids=["malformed", "fields-missing", "deeply-nested", "one-megabyte"],
)
async def test_malformed_and_oversized_bodies_are_refused(
    billing_server: Server, body: bytes, code: int
) -> None:
    assert await post(webhook_url(billing_server), body) == code


async def test_a_notification_ahead_of_the_status_query_waits_for_fawrys_retry(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    payment = await _pay_request(billing_server, tenant, "75.00")
    charge = fawry.pay(payment.merchant_ref_number)
    url = webhook_url(billing_server)
    fawry.status_override[charge.merchant_ref] = "NEW"  # Fawry's query lags its notification
    assert await fawry.notify(url, charge) == 503
    fawry.status_override.clear()
    fawry.status_unavailable = True  # then the query is down
    assert await fawry.notify(url, charge) == 503
    assert await _balance(owner_conn, tenant.client_id) == 0
    fawry.status_unavailable = False
    assert await fawry.notify(url, charge) == 200  # the retry that finally applies it
    assert await _balance(owner_conn, tenant.client_id) == Decimal("75.00")
    rows = await _notifications(owner_conn, charge.reference)
    assert len(rows) == 1  # one verified (reference, status): retries found it
    assert rows[0]["outcome"] == "credited"


async def test_a_replayed_paid_after_a_refund_credits_nothing_and_status_never_goes_back(
    billing_server: Server,
    fawry: FakeFawry,
    tenant: Tenant,
    staff: Account,
    owner_conn: asyncpg.Connection,
) -> None:
    payment = await _pay_request(billing_server, tenant, "200.00")
    charge = fawry.pay(payment.merchant_ref_number)
    url = webhook_url(billing_server)
    assert await fawry.notify(url, charge) == 200
    api = stub(billing_server)
    partial = await api.RefundFawryPayment(
        billing_pb2.RefundFawryPaymentRequest(id=payment.id, amount="50.00", reason="too much"),
        metadata=staff.md,
    )
    assert partial.payment.status == "PARTIAL_REFUNDED"
    assert partial.credit_transaction.amount.amount == "-50.0000"
    assert partial.credit_transaction.reverses_id == partial.payment.credit_transaction_id
    rest = await api.RefundFawryPayment(
        billing_pb2.RefundFawryPaymentRequest(id=payment.id), metadata=staff.md
    )
    assert rest.payment.status == "REFUNDED"
    assert await _balance(owner_conn, tenant.client_id) == 0
    assert await fawry.notify(url, charge, status="REFUNDED") == 200
    # An old PAID replayed (the same verified notification) and a fresh PAID copy alike.
    assert await fawry.notify(url, charge, status="PAID") == 200
    assert await _balance(owner_conn, tenant.client_id) == 0
    got = await api.GetFawryPayment(
        billing_pb2.GetFawryPaymentRequest(id=payment.id), metadata=staff.md
    )
    assert got.payment.status == "REFUNDED"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.RefundFawryPayment(
            billing_pb2.RefundFawryPaymentRequest(id=payment.id), metadata=staff.md
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    _, _, rows = await ledger_state(owner_conn, tenant.client_id)
    assert [r[0] for r in rows] == [Decimal("200"), Decimal("-50"), Decimal("-150")]


async def test_a_tenant_cannot_refund_and_fawry_takes_only_egp(
    billing_server: Server, tenant: Tenant
) -> None:
    api = stub(billing_server)
    payment = await _pay_request(billing_server, tenant, "10.00")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.RefundFawryPayment(
            billing_pb2.RefundFawryPaymentRequest(id=payment.id),
            metadata=tenant.users["client"].md,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.CreateFawryPayment(
            billing_pb2.CreateFawryPaymentRequest(
                amount=common_pb2.Money(currency_code="USD", amount="10.001")
            ),
            metadata=tenant.users["client"].md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
