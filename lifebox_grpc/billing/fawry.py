"""Fawry's API as LifeBox uses it: create a PAYATFAWRY (or card-token) charge, query a
payment's status (V2) and refund, plus the parsed shape of a server notification V2.

The one true external boundary of billing: tests point ``base_url`` at the fake Fawry in
``tests/helpers/fawry_fake.py``. The secure key is held as a SecretStr by the caller and
passed in per client; it is never logged or put in an error message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

from lifebox_grpc.billing import signatures

log = logging.getLogger(__name__)

STATUSES = ("NEW", "PAID", "CANCELED", "REFUNDED", "EXPIRED", "PARTIAL_REFUNDED", "FAILED")
CHARGE_PATH = "/ECommerceWeb/Fawry/payments/charge"
STATUS_PATH = "/ECommerceWeb/Fawry/payments/status/v2"
REFUND_PATH = "/ECommerceWeb/Fawry/payments/refund"
CHECKOUT_PATH = "/fawrypay-api/api/payments/init"
CARDS_PATH = "/ECommerceWeb/Fawry/cards/cardToken"


class FawryError(Exception):
    """A call to Fawry did not give an answer we can use."""


class FawryUnavailable(FawryError):
    """Fawry could not be reached or answered with a server error: try again later."""


class FawryRefused(FawryError):
    """Fawry answered, and refused (``statusCode`` other than 200)."""

    def __init__(self, status_code: object, description: str) -> None:
        super().__init__(f"Fawry refused: {status_code} {description}")
        self.status_code = status_code
        self.description = description


class MalformedNotice(ValueError):
    """A notification or status answer missing a field or with a field of the wrong type."""


def parse_json(body: bytes) -> Any:
    """JSON with every non-integer number as Decimal (amounts never pass through float)."""
    return json.loads(body, parse_float=Decimal, parse_int=Decimal)


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise MalformedNotice(f"{key} is missing")
        return ""
    if isinstance(value, Decimal):  # a reference number sent as a JSON number
        return f"{value:f}"
    if not isinstance(value, str) or len(value) > 200:
        raise MalformedNotice(f"{key} must be a string")
    return value


def _amount(data: dict[str, Any], key: str) -> Decimal:
    value = data.get(key)
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except ArithmeticError as exc:
            raise MalformedNotice(f"{key} must be a number") from exc
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise MalformedNotice(f"{key} must be a non-negative number")
    return value


@dataclass(frozen=True)
class Notice:
    """A server notification V2, or a status V2 answer (the same fields, same signature)."""

    fawry_ref_number: str
    merchant_ref_number: str
    payment_amount: Decimal
    order_amount: Decimal
    order_status: str
    payment_method: str
    payment_reference_number: str
    message_signature: str
    fawry_fees: Decimal | None

    @classmethod
    def from_json(cls, data: Any, *, ref_key: str = "fawryRefNumber") -> Notice:
        if not isinstance(data, dict):
            raise MalformedNotice("the body must be a JSON object")
        status = _text(data, "orderStatus")
        if status not in STATUSES:
            raise MalformedNotice(f"orderStatus {status[:20]!r} is not one Fawry sends")
        fees = data.get("fawryFees")
        return cls(
            fawry_ref_number=_text(data, ref_key),
            merchant_ref_number=_text(data, "merchantRefNumber"),
            payment_amount=_amount(data, "paymentAmount"),
            order_amount=_amount(data, "orderAmount"),
            order_status=status,
            payment_method=_text(data, "paymentMethod"),
            payment_reference_number=_text(data, "paymentRefrenceNumber", required=False),
            message_signature=_text(data, "messageSignature", required=False),
            fawry_fees=fees if isinstance(fees, Decimal) else None,
        )

    def expected_signature(self, secure_key: str) -> str:
        return signatures.notification_signature(
            fawry_ref_number=self.fawry_ref_number,
            merchant_ref_number=self.merchant_ref_number,
            payment_amount=self.payment_amount,
            order_amount=self.order_amount,
            order_status=self.order_status,
            payment_method=self.payment_method,
            payment_reference_number=self.payment_reference_number,
            secure_key=secure_key,
        )

    def verified(self, secure_key: str) -> bool:
        return signatures.signature_matches(
            self.expected_signature(secure_key), self.message_signature
        )


@dataclass(frozen=True)
class ChargeRequest:
    merchant_ref_num: str
    customer_profile_id: str
    payment_method: str  # PAYATFAWRY or CARD
    amount: Decimal
    currency: str
    description: str
    expiry_epoch_ms: int | None = None
    card_token: str | None = None
    customer_mobile: str | None = None
    customer_email: str | None = None


@dataclass(frozen=True)
class ChargeAnswer:
    reference_number: str
    order_status: str
    # Where Fawry wants the payer sent first (a 3-D Secure step), when it says so.
    redirect_url: str | None = None


@dataclass(frozen=True)
class SavedCard:
    """A card saved at Fawry under a customer profile, as Fawry lists it (never its number)."""

    token: str
    last_four: str
    brand: str


def _url(value: object) -> str | None:
    if isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) < 2000:
        return value
    return None


class FawryClient:
    """Calls to one merchant account at ``base_url``."""

    def __init__(
        self, base_url: str, merchant_code: str, secure_key: str, *, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.merchant_code = merchant_code
        self._secure_key = secure_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:  # never show the key
        return f"FawryClient({self.base_url!r}, merchant_code={self.merchant_code!r})"

    def verify(self, notice: Notice) -> bool:
        """Whether ``notice`` carries the signature only Fawry (holding our key) can make."""
        return notice.verified(self._secure_key)

    async def _raw(self, method: str, path: str, **kwargs: Any) -> bytes:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.request(method, self.base_url + path, **kwargs) as reply,
            ):
                body = await reply.read()
                if reply.status >= 500:
                    raise FawryUnavailable(f"Fawry answered HTTP {reply.status}")
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FawryUnavailable(f"Fawry unreachable: {type(exc).__name__}") from exc

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self._raw(method, path, **kwargs)
        try:
            data = parse_json(body)
        except ValueError as exc:
            raise FawryUnavailable("Fawry answered something that is not JSON") from exc
        if not isinstance(data, dict):
            raise FawryUnavailable("Fawry answered something that is not a JSON object")
        code = data.get("statusCode")
        if code is not None and code != 200:
            raise FawryRefused(code, str(data.get("statusDescription", ""))[:200])
        return data

    async def charge(self, request: ChargeRequest) -> ChargeAnswer:
        """Create a charge; for PAYATFAWRY the answer's reference number is what the customer
        pays at an outlet."""
        body: dict[str, Any] = {
            "merchantCode": self.merchant_code,
            "merchantRefNum": request.merchant_ref_num,
            "customerProfileId": request.customer_profile_id,
            "paymentMethod": request.payment_method,
            "amount": signatures.two_decimals(request.amount),
            "currencyCode": request.currency,
            "description": request.description,
            "chargeItems": [
                {
                    "itemId": "lifebox-credit",
                    "description": request.description,
                    "price": signatures.two_decimals(request.amount),
                    "quantity": 1,
                }
            ],
            "signature": signatures.charge_signature(
                merchant_code=self.merchant_code,
                merchant_ref_num=request.merchant_ref_num,
                customer_profile_id=request.customer_profile_id,
                payment_method=request.payment_method,
                amount=request.amount,
                card_token=request.card_token,
                secure_key=self._secure_key,
            ),
        }
        if request.expiry_epoch_ms is not None:
            body["paymentExpiry"] = request.expiry_epoch_ms
        if request.card_token:
            body["cardToken"] = request.card_token
        if request.customer_mobile:
            body["customerMobile"] = request.customer_mobile
        if request.customer_email:
            body["customerEmail"] = request.customer_email
        data = await self._call("POST", CHARGE_PATH, json=body)
        reference = data.get("referenceNumber")
        if not isinstance(reference, str | Decimal) or not str(reference):
            raise FawryUnavailable("Fawry's charge answer has no reference number")
        status = data.get("orderStatus", "NEW")
        next_action = data.get("nextAction")
        redirect = _url(next_action.get("redirectUrl")) if isinstance(next_action, dict) else None
        return ChargeAnswer(
            f"{reference:f}" if isinstance(reference, Decimal) else reference,
            str(status),
            redirect,
        )

    async def checkout_link(
        self,
        *,
        merchant_ref_num: str,
        customer_profile_id: str,
        amount: Decimal,
        description: str,
        return_url: str,
        expiry_epoch_ms: int,
        customer_mobile: str | None = None,
        customer_email: str | None = None,
    ) -> str:
        """FawryPay Express Checkout (hosted): the URL of Fawry's own payment page, where the
        payer enters the card (and may save it under ``customer_profile_id``); the result
        reaches LifeBox as a server notification V2, never through LifeBox's hands."""
        item_id = "lifebox-credit"
        body: dict[str, Any] = {
            "merchantCode": self.merchant_code,
            "merchantRefNum": merchant_ref_num,
            "customerProfileId": customer_profile_id,
            "customerName": "LifeBox customer",
            "paymentMethod": "CARD",
            "paymentExpiry": expiry_epoch_ms,
            "language": "en-gb",
            "chargeItems": [
                {
                    "itemId": item_id,
                    "description": description,
                    "price": signatures.two_decimals(amount),
                    "quantity": 1,
                }
            ],
            "returnUrl": return_url,
            "authCaptureModePayment": False,
            "signature": signatures.checkout_signature(
                merchant_code=self.merchant_code,
                merchant_ref_num=merchant_ref_num,
                customer_profile_id=customer_profile_id,
                return_url=return_url,
                items=[(item_id, 1, amount)],
                secure_key=self._secure_key,
            ),
        }
        if customer_mobile:
            body["customerMobile"] = customer_mobile
        if customer_email:
            body["customerEmail"] = customer_email
        raw = await self._raw("POST", CHECKOUT_PATH, json=body)
        text = raw.decode("utf-8", "replace").strip()
        if text.startswith("{"):  # a refusal, or the URL inside an object ({"url": ...})
            try:
                data = parse_json(raw)
            except ValueError as exc:
                raise FawryUnavailable("Fawry answered something that is not JSON") from exc
            code = data.get("statusCode", 200)
            if code != 200 or not isinstance(data.get("url"), str):
                raise FawryRefused(code, str(data.get("statusDescription", ""))[:200])
            text = data["url"]
        url = _url(text.strip('"'))
        if url is None:
            raise FawryUnavailable("Fawry's checkout answer is not a URL")
        return url

    async def list_cards(self, customer_profile_id: str) -> list[SavedCard]:
        """The cards saved at Fawry under ``customer_profile_id`` (List Card Tokens)."""
        params = {
            "merchantCode": self.merchant_code,
            "customerProfileId": customer_profile_id,
            "signature": signatures.card_list_signature(
                merchant_code=self.merchant_code,
                customer_profile_id=customer_profile_id,
                secure_key=self._secure_key,
            ),
        }
        data = await self._call("GET", CARDS_PATH, params=params)
        cards = data.get("cards") or []
        if not isinstance(cards, list):
            raise FawryUnavailable("Fawry's card list is malformed")
        found = []
        for card in cards:
            if not isinstance(card, dict):
                continue
            token, four = card.get("token"), str(card.get("lastFourDigits", ""))
            if (
                isinstance(token, str)
                and 0 < len(token) <= 200
                and len(four) == 4
                and four.isdigit()
            ):
                found.append(SavedCard(token, four, str(card.get("brand", ""))[:40]))
        return found

    async def delete_card(self, customer_profile_id: str, card_token: str) -> None:
        """Delete Card Token at Fawry."""
        params = {
            "merchantCode": self.merchant_code,
            "customerProfileId": customer_profile_id,
            "cardToken": card_token,
            "signature": signatures.card_delete_signature(
                merchant_code=self.merchant_code,
                customer_profile_id=customer_profile_id,
                card_token=card_token,
                secure_key=self._secure_key,
            ),
        }
        await self._call("DELETE", CARDS_PATH, params=params)

    async def status(self, merchant_ref_number: str) -> Notice:
        """Fawry's own word on a payment (status V2), signature verified; FawryError when it
        cannot be had or does not verify."""
        params = {
            "merchantCode": self.merchant_code,
            "merchantRefNumber": merchant_ref_number,
            "signature": signatures.status_signature(
                merchant_code=self.merchant_code,
                merchant_ref_number=merchant_ref_number,
                secure_key=self._secure_key,
            ),
        }
        data = await self._call("GET", STATUS_PATH, params=params)
        try:
            notice = Notice.from_json(data)
        except MalformedNotice as exc:
            raise FawryUnavailable(f"Fawry's status answer is malformed: {exc}") from exc
        if not notice.verified(self._secure_key):
            raise FawryUnavailable("Fawry's status answer does not carry a valid signature")
        return notice

    async def refund(self, reference_number: str, amount: Decimal, reason: str | None) -> None:
        body: dict[str, Any] = {
            "merchantCode": self.merchant_code,
            "referenceNumber": reference_number,
            "refundAmount": signatures.two_decimals(amount),
            "signature": signatures.refund_signature(
                merchant_code=self.merchant_code,
                reference_number=reference_number,
                refund_amount=amount,
                reason=reason,
                secure_key=self._secure_key,
            ),
        }
        if reason:
            body["reason"] = reason
        await self._call("POST", REFUND_PATH, json=body)
