"""A local fake of Fawry's API, for the test suite and `lifebox dev --fake-fawry` only (never
imported by serve): an aiohttp server that checks signatures, issues reference numbers,
answers status queries (V2) and refunds, and sends server notifications V2 signed as Fawry
signs them, including duplicates, out-of-order statuses, wrong amounts and bad signatures.

Its signatures are computed here with hashlib from Fawry's documented field order, on its
own (nothing from lifebox_grpc.billing), so the tests check LifeBox's implementation against
an independent one. Run standalone (`python -m lifebox_grpc.runtime.fake_fawry --port N
--webhook URL`), it marks every charge paid after a few seconds and notifies the webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp
from aiohttp import web

MERCHANT_CODE = "fake-merchant-code=="
SECURE_KEY = "fake-secure-key-0123456789abcdef"


def _sha(*parts: str) -> str:
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _cents(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass
class FakeCharge:
    merchant_ref: str
    reference: str
    amount: Decimal
    method: str
    status: str = "NEW"
    refunded: Decimal = Decimal(0)
    profile: str = ""
    return_url: str = ""


@dataclass
class FakeCard:
    """A card a customer saved on the fake's own page: only Fawry ever saw its number."""

    token: str
    last_four: str
    brand: str
    created_ms: int


@dataclass
class FakeFawry:
    """State and switches of the fake; ``url`` is its base URL once started."""

    secure_key: str = SECURE_KEY
    merchant_code: str = MERCHANT_CODE
    charges: dict[str, FakeCharge] = field(default_factory=dict)
    by_reference: dict[str, FakeCharge] = field(default_factory=dict)
    # Switches: answer status queries with HTTP 503, or with this (older) status.
    status_unavailable: bool = False
    status_override: dict[str, str] = field(default_factory=dict)
    refused_signatures: int = 0
    # Standalone (dev): pay each new charge after this many seconds and notify this URL.
    auto_pay_seconds: float | None = None
    webhook_url: str | None = None
    status_queries: int = 0
    # Saved cards by customer profile id; a switch making card-token charges ask for 3-D Secure.
    cards: dict[str, list[FakeCard]] = field(default_factory=dict)
    require_3ds: bool = False
    # Answer Express Checkout with {"statusCode": 200, "url": ...} instead of the bare URL.
    checkout_as_object: bool = False
    url: str = ""
    _runner: web.AppRunner | None = None
    _numbers: Any = field(default_factory=lambda: itertools.count(900_000_001))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- server ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/ECommerceWeb/Fawry/payments/charge", self._charge)
        app.router.add_get("/ECommerceWeb/Fawry/payments/status/v2", self._status)
        app.router.add_post("/ECommerceWeb/Fawry/payments/refund", self._refund)
        app.router.add_post("/fawrypay-api/api/payments/init", self._checkout)
        app.router.add_get("/ECommerceWeb/Fawry/cards/cardToken", self._list_cards)
        app.router.add_delete("/ECommerceWeb/Fawry/cards/cardToken", self._delete_card)
        app.router.add_get("/checkout/{merchant_ref}", self._checkout_page)
        app.router.add_get("/3ds/{reference}", self._3ds_page)
        return app

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self) -> web.Response:
        self.refused_signatures += 1
        return web.json_response({"statusCode": 9946, "statusDescription": "Wrong Signature"})

    async def _charge(self, request: web.Request) -> web.Response:
        body = await request.json()
        amount = Decimal(body["amount"])
        expected = _sha(
            body["merchantCode"],
            body["merchantRefNum"],
            body["customerProfileId"],
            body["paymentMethod"],
            _cents(amount),
            body.get("cardToken", ""),
            self.secure_key,
        )
        if body["merchantCode"] != self.merchant_code or body.get("signature") != expected:
            return self._refuse()
        profile = str(body["customerProfileId"])
        token = body.get("cardToken", "")
        known = any(c.token == token for c in self.cards.get(profile, []))
        if body["paymentMethod"] == "CARD" and not known:
            return web.json_response({"statusCode": 9954, "statusDescription": "bad token"})
        reference = str(next(self._numbers))
        charge = FakeCharge(
            body["merchantRefNum"], reference, amount, body["paymentMethod"], profile=profile
        )
        self.charges[charge.merchant_ref] = charge
        self.by_reference[reference] = charge
        answer: dict[str, Any] = {
            "type": "ChargeResponse",
            "referenceNumber": reference,
            "merchantRefNumber": charge.merchant_ref,
            "orderAmount": float(amount),
            "paymentAmount": float(amount),
            "fawryFees": 0.0,
            "paymentMethod": charge.method,
            "orderStatus": "NEW",
            "statusCode": 200,
            "statusDescription": "Operation done successfully",
        }
        if charge.method == "CARD" and self.require_3ds:
            answer["nextAction"] = {
                "type": "THREE_D_SECURE",
                "redirectUrl": f"{self.url}/3ds/{reference}",
            }
        elif charge.method == "CARD":
            charge.status = answer["orderStatus"] = "PAID"  # a token charge is taken at once
        elif self.auto_pay_seconds is not None and self.webhook_url:
            task = asyncio.get_running_loop().create_task(self._auto_pay(charge))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(answer)

    async def _checkout(self, request: web.Request) -> web.Response:
        """Express Checkout: a hosted page's URL, as text."""
        body = await request.json()
        parts = [
            body["merchantCode"],
            body["merchantRefNum"],
            str(body.get("customerProfileId", "")),
            body["returnUrl"],
        ]
        total = Decimal(0)
        for item in body["chargeItems"]:
            price = Decimal(item["price"])
            parts += [item["itemId"], str(item["quantity"]), _cents(price)]
            total += price * int(item["quantity"])
        if body["merchantCode"] != self.merchant_code or body.get("signature") != _sha(
            *parts, self.secure_key
        ):
            return self._refuse()
        charge = FakeCharge(
            body["merchantRefNum"],
            str(next(self._numbers)),
            total,
            "CARD",
            profile=str(body.get("customerProfileId", "")),
            return_url=body["returnUrl"],
        )
        self.charges[charge.merchant_ref] = charge
        self.by_reference[charge.reference] = charge
        page = f"{self.url}/checkout/{charge.merchant_ref}"
        if self.checkout_as_object:
            return web.json_response({"statusCode": 200, "type": "NEW", "url": page})
        return web.Response(text=page)

    async def _checkout_page(self, request: web.Request) -> web.Response:
        """The hosted page, as a payer's browser sees it in dev: the payer "enters a card"
        (saved under the profile), pays, Fawry notifies LifeBox and sends the browser back."""
        charge = self.charges.get(request.match_info["merchant_ref"])
        if charge is None or charge.status != "NEW":
            return web.Response(status=404, text="no such checkout")
        self.complete_checkout(charge.merchant_ref)
        return self._paid_page(charge)

    async def _3ds_page(self, request: web.Request) -> web.Response:
        """A 3-D Secure step passed: the charge is paid and notified."""
        charge = self.by_reference.get(request.match_info["reference"])
        if charge is None or charge.status != "NEW":
            return web.Response(status=404, text="no such payment")
        charge.status = "PAID"
        return self._paid_page(charge)

    def _paid_page(self, charge: FakeCharge) -> web.Response:
        if self.webhook_url:
            task = asyncio.get_running_loop().create_task(self._notify_until_ok(charge))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if charge.return_url:
            separator = "&" if "?" in charge.return_url else "?"
            raise web.HTTPFound(
                f"{charge.return_url}{separator}statusCode=200"
                f"&merchantRefNumber={charge.merchant_ref}&orderStatus=PAID"
            )
        return web.Response(text=f"fake Fawry: {charge.merchant_ref} paid")

    def _cards_query(self, request: web.Request, *extra: str) -> tuple[str, bool]:
        q = request.query
        profile = q.get("customerProfileId", "")
        fields = [q.get("merchantCode", ""), profile, *(q.get(e, "") for e in extra)]
        ok = q.get("merchantCode") == self.merchant_code and q.get("signature") == _sha(
            *fields, self.secure_key
        )
        return profile, ok

    async def _list_cards(self, request: web.Request) -> web.Response:
        profile, ok = self._cards_query(request)
        if not ok:
            return self._refuse()
        cards = [
            {
                "token": c.token,
                "creationDate": c.created_ms,
                "lastFourDigits": c.last_four,
                "brand": c.brand,
            }
            for c in self.cards.get(profile, [])
        ]
        return web.json_response(
            {"type": "CustomerTokensResponse", "cards": cards, "statusCode": 200}
        )

    async def _delete_card(self, request: web.Request) -> web.Response:
        profile, ok = self._cards_query(request, "cardToken")
        if not ok:
            return self._refuse()
        token = request.query["cardToken"]
        kept = [c for c in self.cards.get(profile, []) if c.token != token]
        if len(kept) == len(self.cards.get(profile, [])):
            return web.json_response({"statusCode": 9955, "statusDescription": "no such card"})
        self.cards[profile] = kept
        return web.json_response({"statusCode": 200, "statusDescription": "Operation done"})

    async def _status(self, request: web.Request) -> web.Response:
        self.status_queries += 1
        if self.status_unavailable:
            return web.Response(status=503, text="maintenance")
        q = request.query
        expected = _sha(q["merchantCode"], q["merchantRefNumber"], self.secure_key)
        if q.get("signature") != expected:
            return self._refuse()
        charge = self.charges.get(q["merchantRefNumber"])
        if charge is None:
            return web.json_response({"statusCode": 9938, "statusDescription": "not found"})
        status = self.status_override.get(charge.merchant_ref, charge.status)
        return web.Response(
            text=self.notification_body(charge, status=status, raw=True),
            content_type="application/json",
        )

    async def _refund(self, request: web.Request) -> web.Response:
        body = await request.json()
        amount = Decimal(body["refundAmount"])
        expected = _sha(
            body["merchantCode"],
            body["referenceNumber"],
            _cents(amount),
            body.get("reason", ""),
            self.secure_key,
        )
        if body.get("signature") != expected:
            return self._refuse()
        charge = self.by_reference[body["referenceNumber"]]
        charge.refunded += amount
        charge.status = "REFUNDED" if charge.refunded >= charge.amount else "PARTIAL_REFUNDED"
        return web.json_response({"statusCode": 200, "statusDescription": "Operation done"})

    async def _auto_pay(self, charge: FakeCharge) -> None:
        assert self.auto_pay_seconds is not None
        assert self.webhook_url is not None
        await asyncio.sleep(self.auto_pay_seconds)
        charge.status = "PAID"
        await self._notify_until_ok(charge)

    async def _notify_until_ok(self, charge: FakeCharge) -> None:
        assert self.webhook_url is not None
        for _ in range(5):  # as Fawry does: until a 200
            try:
                if await self.notify(self.webhook_url, charge) == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(2)

    # -- what the tests do ------------------------------------------------------------------

    def save_card(self, profile: str, last_four: str = "4242", brand: str = "Visa Card") -> str:
        """The customer saves a card on Fawry's page (or plugin) under ``profile``."""
        token = hashlib.sha256(f"{profile}:{len(self._tasks)}:{next(self._numbers)}".encode())
        card = FakeCard(token.hexdigest(), last_four, brand, 1_700_000_000_000)
        self.cards.setdefault(profile, []).append(card)
        return card.token

    def complete_checkout(self, merchant_ref: str, *, save_card: bool = True) -> FakeCharge:
        """The payer enters a card on the hosted page (3-D Secure passed) and pays; the card
        is saved under the charge's profile when asked."""
        charge = self.charges[merchant_ref]
        charge.status = "PAID"
        if save_card and charge.profile:
            self.save_card(charge.profile, "1111", "MasterCard")
        return charge

    def pay(self, merchant_ref: str) -> FakeCharge:
        """The customer pays at an outlet."""
        charge = self.charges[merchant_ref]
        charge.status = "PAID"
        return charge

    def notification_body(
        self,
        charge: FakeCharge,
        *,
        status: str | None = None,
        order_amount: Decimal | None = None,
        merchant_ref: str | None = None,
        bad_signature: bool = False,
        raw: bool = False,
    ) -> str:
        """A notification V2 as Fawry sends it: amounts as JSON numbers like 840.0."""
        status = status or charge.status
        amount = order_amount if order_amount is not None else charge.amount
        ref = merchant_ref or charge.merchant_ref
        signature = _sha(
            charge.reference,
            ref,
            _cents(amount),
            _cents(amount),
            status,
            charge.method,
            "",
            "not-the-key" if bad_signature else self.secure_key,
        )
        # Written by hand so amounts go out as JSON numbers with one decimal (840.0).
        tenths = amount.quantize(Decimal("0.1"))
        number = f"{tenths}" if tenths == amount else f"{amount}"
        return (
            "{"
            f'"requestId": "req-{charge.reference}", "fawryRefNumber": "{charge.reference}", '
            f'"merchantRefNumber": {json.dumps(ref)}, "customerMobile": "01000000000", '
            f'"paymentAmount": {number}, "orderAmount": {number}, "fawryFees": 0.0, '
            f'"orderStatus": "{status}", "paymentMethod": "{charge.method}", '
            f'"messageSignature": "{signature}", "orderItems": []'
            "}"
        )

    async def notify(self, webhook_url: str, charge: FakeCharge, **kwargs: Any) -> int:
        """POST a notification to LifeBox; the HTTP status it answered."""
        return await post(webhook_url, self.notification_body(charge, **kwargs).encode())


async def post(url: str, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": "application/json"}) as reply,
    ):
        await reply.read()
        return reply.status


async def _main(port: int, webhook: str, pay_after: float) -> None:
    fake = FakeFawry(auto_pay_seconds=pay_after, webhook_url=webhook)
    print(f"fake Fawry on {await fake.start(port)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fake Fawry for `lifebox dev`.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook", required=True, help="LifeBox's /webhooks/fawry URL")
    parser.add_argument("--pay-after", type=float, default=5.0, help="seconds; each charge")
    options = parser.parse_args()
    asyncio.run(_main(options.port, options.webhook, options.pay_after))
