"""A local fake of Fawry's API (the one true external boundary of billing): an aiohttp server
that checks signatures, issues reference numbers, answers status queries (V2) and refunds,
and sends server notifications V2 signed as Fawry signs them, including duplicates,
out-of-order statuses, wrong amounts and bad signatures.

Its signatures are computed here with hashlib from Fawry's documented field order, on its
own, so the tests check LifeBox's implementation against an independent one.
"""

from __future__ import annotations

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
    status_queries: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _numbers: Any = field(default_factory=lambda: itertools.count(900_000_001))

    # -- server ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/ECommerceWeb/Fawry/payments/charge", self._charge)
        app.router.add_get("/ECommerceWeb/Fawry/payments/status/v2", self._status)
        app.router.add_post("/ECommerceWeb/Fawry/payments/refund", self._refund)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
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
        reference = str(next(self._numbers))
        charge = FakeCharge(body["merchantRefNum"], reference, amount, body["paymentMethod"])
        self.charges[charge.merchant_ref] = charge
        self.by_reference[reference] = charge
        return web.json_response(
            {
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
        )

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

    # -- what the tests do ------------------------------------------------------------------

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
            "PAYATFAWRY",
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
            f'"orderStatus": "{status}", "paymentMethod": "PAYATFAWRY", '
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
