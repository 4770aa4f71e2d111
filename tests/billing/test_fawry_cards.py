"""Card payments through Fawry without a card number reaching LifeBox: Fawry's hosted page
(Express Checkout) credited by its confirmed notification, cards saved at Fawry listed from
Fawry's own List Card Tokens, a saved card charged by token (confirmed, credited once, also
when its notification follows), a 3-D Secure step passed on to the payer, and deletion."""

from __future__ import annotations

import uuid
from decimal import Decimal

import aiohttp
import asyncpg
import grpc
import pytest

from lifebox.v1 import billing_pb2
from tests.helpers.billing import egp, ledger_state, stub, webhook_url
from tests.helpers.fawry_fake import FakeFawry
from tests.helpers.grpc import Server, Tenant, make_tenant, violations
from tests.helpers.wait import async_wait_until

P = billing_pb2


@pytest.fixture
async def tenant(billing_server: Server, owner_conn: asyncpg.Connection) -> Tenant:
    return await make_tenant(billing_server, owner_conn)


@pytest.fixture(autouse=True)
def _no_3ds(fawry: FakeFawry) -> None:
    fawry.require_3ds = False
    fawry.checkout_as_object = False


async def _balance(conn: asyncpg.Connection, client: uuid.UUID) -> Decimal:
    balance, total, _ = await ledger_state(conn, client)
    assert balance == total
    return balance


async def test_a_hosted_checkout_is_credited_by_its_confirmed_notification_and_saves_the_card(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    api, md = stub(billing_server), tenant.users["client"].md
    reply = await api.CreateFawryCardCheckout(
        P.CreateFawryCardCheckoutRequest(
            amount=egp("250.50"), return_url="https://app.example.com/billing/done"
        ),
        metadata=md,
    )
    payment = reply.payment
    assert payment.payment_method == "CARD"
    assert payment.status == "NEW"
    assert payment.redirect_url == f"{fawry.url}/checkout/{payment.merchant_ref_number}"
    assert payment.reference_number == ""
    charge = fawry.charges[payment.merchant_ref_number]
    assert charge.amount == Decimal("250.50")
    assert charge.profile == str(tenant.client_id)
    assert charge.return_url == "https://app.example.com/billing/done"
    assert await _balance(owner_conn, tenant.client_id) == 0
    # Nothing is credited until Fawry's notification is confirmed; then once, on retries too.
    fawry.complete_checkout(payment.merchant_ref_number)
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    got = (await api.GetFawryPayment(P.GetFawryPaymentRequest(id=payment.id), metadata=md)).payment
    assert got.status == "PAID"
    assert got.reference_number == charge.reference
    assert got.credit_transaction_id
    assert await _balance(owner_conn, tenant.client_id) == Decimal("250.50")
    # The card saved on Fawry's page is listed from Fawry, without its token.
    cards = (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards
    assert [(c.last_four, c.brand) for c in cards] == [("1111", "MasterCard")]
    token = fawry.cards[str(tenant.client_id)][0].token
    assert token not in str(cards)


async def test_a_saved_card_is_charged_by_token_confirmed_and_credited_once(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    api, md = stub(billing_server), tenant.users["client"].md
    fawry.save_card(str(tenant.client_id), "4242", "Visa Card")
    (card,) = (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards
    queries = fawry.status_queries
    payment = (
        await api.CreateFawryPayment(
            P.CreateFawryPaymentRequest(amount=egp("99.99"), card_id=card.id), metadata=md
        )
    ).payment
    assert fawry.status_queries == queries + 1  # Fawry's answer is confirmed before crediting
    assert payment.payment_method == "CARD"
    assert payment.status == "PAID"
    assert (payment.card_id, payment.card_last_four, payment.card_brand) == (
        card.id,
        "4242",
        "Visa Card",
    )
    assert payment.credit_transaction_id
    assert await _balance(owner_conn, tenant.client_id) == Decimal("99.99")
    # Fawry's notification of the same payment changes nothing.
    charge = fawry.charges[payment.merchant_ref_number]
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    assert await _balance(owner_conn, tenant.client_id) == Decimal("99.99")


async def test_a_card_charge_needing_3ds_waits_for_the_payer_and_its_notification(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    api, md = stub(billing_server), tenant.users["client"].md
    fawry.save_card(str(tenant.client_id))
    (card,) = (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards
    fawry.require_3ds = True
    payment = (
        await api.CreateFawryPayment(
            P.CreateFawryPaymentRequest(amount=egp("40.00"), card_id=card.id), metadata=md
        )
    ).payment
    assert payment.status == "NEW"
    assert payment.redirect_url == f"{fawry.url}/3ds/{payment.reference_number}"
    assert await _balance(owner_conn, tenant.client_id) == 0
    charge = fawry.pay(payment.merchant_ref_number)
    assert await fawry.notify(webhook_url(billing_server), charge) == 200
    assert await _balance(owner_conn, tenant.client_id) == Decimal("40.00")


async def test_a_deleted_card_is_gone_at_fawry_and_here(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant
) -> None:
    api, md = stub(billing_server), tenant.users["client"].md
    profile = str(tenant.client_id)
    fawry.save_card(profile, "0005", "Meeza")
    fawry.save_card(profile, "0006", "Visa Card")
    cards = (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards
    assert sorted(c.last_four for c in cards) == ["0005", "0006"]
    gone = next(c for c in cards if c.last_four == "0005")
    await api.DeleteFawryCard(P.DeleteFawryCardRequest(id=gone.id), metadata=md)
    assert [c.last_four for c in fawry.cards[profile]] == ["0006"]
    left = (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards
    assert [c.last_four for c in left] == ["0006"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.CreateFawryPayment(
            P.CreateFawryPaymentRequest(amount=egp("1.00"), card_id=gone.id), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # A card removed at Fawry (on its own page) disappears from the list too.
    fawry.cards[profile] = []
    assert not (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (P.CreateFawryCardCheckoutRequest(amount=egp("5.00")), "return_url"),
        (
            P.CreateFawryCardCheckoutRequest(amount=egp("5.00"), return_url="http://evil.example/"),
            "return_url",
        ),
        (
            P.CreateFawryCardCheckoutRequest(amount=egp("5.001"), return_url="https://a.example/"),
            "amount.amount",
        ),
        (P.CreateFawryPaymentRequest(amount=egp("5.00"), card_id="not-a-uuid"), "card_id"),
    ],
)
async def test_bad_card_payment_requests_are_invalid_argument(
    billing_server: Server, tenant: Tenant, request_: object, field: str
) -> None:
    method = (
        "CreateFawryCardCheckout"
        if isinstance(request_, P.CreateFawryCardCheckoutRequest)
        else "CreateFawryPayment"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub(billing_server), method)(request_, metadata=tenant.users["client"].md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value)


async def test_the_fakes_hosted_page_pays_notifies_and_sends_the_payer_back(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    """What `lifebox dev --fake-fawry` gives a browser: the payer follows redirect_url, Fawry
    notifies LifeBox (signed, confirmed, credited) and sends the browser to return_url."""
    api, md = stub(billing_server), tenant.users["client"].md
    payment = (
        await api.CreateFawryCardCheckout(
            P.CreateFawryCardCheckoutRequest(
                amount=egp("75.00"), return_url="http://localhost:3000/billing?tab=pay"
            ),
            metadata=md,
        )
    ).payment
    fawry.webhook_url = webhook_url(billing_server)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(payment.redirect_url, allow_redirects=False) as page,
        ):
            assert page.status == 302
            assert page.headers["Location"] == (
                "http://localhost:3000/billing?tab=pay&statusCode=200"
                f"&merchantRefNumber={payment.merchant_ref_number}&orderStatus=PAID"
            )

        async def credited() -> bool:
            return await _balance(owner_conn, tenant.client_id) == Decimal("75.00")

        await async_wait_until(credited, 60, "the hosted payment credited")
    finally:
        fawry.webhook_url = None


async def test_a_token_fawry_no_longer_knows_fails_the_payment_and_credits_nothing(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, owner_conn: asyncpg.Connection
) -> None:
    api, md = stub(billing_server), tenant.users["client"].md
    profile = str(tenant.client_id)
    fawry.save_card(profile)
    (card,) = (await api.ListFawryCards(P.ListFawryCardsRequest(), metadata=md)).cards
    fawry.cards[profile] = []  # removed at Fawry since LifeBox last listed it
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.CreateFawryPayment(
            P.CreateFawryPaymentRequest(amount=egp("10.00"), card_id=card.id), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (payment,) = (await api.ListFawryPayments(P.ListFawryPaymentsRequest(), metadata=md)).payments
    assert (payment.status, payment.card_last_four) == ("FAILED", "4242")
    assert await _balance(owner_conn, tenant.client_id) == 0


@pytest.mark.parametrize("as_object", [False, True])
async def test_fawrys_checkout_answer_is_read_as_a_bare_url_or_an_object(
    billing_server: Server, fawry: FakeFawry, tenant: Tenant, as_object: bool
) -> None:
    fawry.checkout_as_object = as_object
    payment = (
        await stub(billing_server).CreateFawryCardCheckout(
            P.CreateFawryCardCheckoutRequest(
                amount=egp("12.00"), return_url="https://app.example.com/x"
            ),
            metadata=tenant.users["client"].md,
        )
    ).payment
    assert payment.redirect_url == f"{fawry.url}/checkout/{payment.merchant_ref_number}"
