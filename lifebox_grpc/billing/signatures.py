"""Fawry's request and notification signatures: lowercase hex SHA-256 of fields concatenated
in Fawry's documented order, then the merchant's secure key.

Amounts are signed with exactly two decimals. They arrive as JSON numbers (``840.0``), which
the webhook parses straight to :class:`~decimal.Decimal` (never float), so formatting here
is decimal arithmetic: ``Decimal("840.0")`` -> ``"840.00"``.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_CENTS = Decimal("0.01")


class AmountError(ValueError):
    """An amount that is not a finite decimal number."""


def two_decimals(amount: Decimal | int | str) -> str:
    """``amount`` with two decimals (half up), as Fawry signs it; never via float."""
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
        if not value.is_finite():
            raise AmountError(f"not a finite amount: {amount!r}")
        return f"{value.quantize(_CENTS, rounding=ROUND_HALF_UP):f}"
    except InvalidOperation as exc:
        raise AmountError(f"not an amount: {amount!r}") from exc


def _digest(*parts: str) -> str:
    return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()


def charge_signature(
    *,
    merchant_code: str,
    merchant_ref_num: str,
    customer_profile_id: str,
    payment_method: str,
    amount: Decimal,
    card_token: str | None,
    secure_key: str,
) -> str:
    """Signature of ``POST /ECommerceWeb/Fawry/payments/charge``."""
    return _digest(
        merchant_code,
        merchant_ref_num,
        customer_profile_id,
        payment_method,
        two_decimals(amount),
        card_token or "",
        secure_key,
    )


def status_signature(*, merchant_code: str, merchant_ref_number: str, secure_key: str) -> str:
    """Signature of ``GET /ECommerceWeb/Fawry/payments/status/v2``."""
    return _digest(merchant_code, merchant_ref_number, secure_key)


def refund_signature(
    *,
    merchant_code: str,
    reference_number: str,
    refund_amount: Decimal,
    reason: str | None,
    secure_key: str,
) -> str:
    """Signature of ``POST /ECommerceWeb/Fawry/payments/refund``."""
    return _digest(
        merchant_code, reference_number, two_decimals(refund_amount), reason or "", secure_key
    )


def checkout_signature(
    *,
    merchant_code: str,
    merchant_ref_num: str,
    customer_profile_id: str,
    return_url: str,
    items: list[tuple[str, int, Decimal]],
    secure_key: str,
) -> str:
    """Signature of FawryPay Express Checkout's charge request (``POST
    /fawrypay-api/api/payments/init``): merchantCode + merchantRefNum + customerProfileId
    (empty when absent) + returnUrl + each item's itemId + quantity + price (two decimals),
    items in the order sent, + secure key."""
    parts = [merchant_code, merchant_ref_num, customer_profile_id, return_url]
    for item_id, quantity, price in items:
        parts += [item_id, str(quantity), two_decimals(price)]
    return _digest(*parts, secure_key)


def card_list_signature(*, merchant_code: str, customer_profile_id: str, secure_key: str) -> str:
    """Signature of List Card Tokens (``GET /ECommerceWeb/Fawry/cards/cardToken``)."""
    return _digest(merchant_code, customer_profile_id, secure_key)


def card_delete_signature(
    *, merchant_code: str, customer_profile_id: str, card_token: str, secure_key: str
) -> str:
    """Signature of Delete Card Token (``DELETE /ECommerceWeb/Fawry/cards/cardToken``)."""
    return _digest(merchant_code, customer_profile_id, card_token, secure_key)


def notification_signature(
    *,
    fawry_ref_number: str,
    merchant_ref_number: str,
    payment_amount: Decimal,
    order_amount: Decimal,
    order_status: str,
    payment_method: str,
    payment_reference_number: str | None,
    secure_key: str,
) -> str:
    """``messageSignature`` of a server notification V2 (and of a status V2 answer, which has
    the same fields). ``payment_reference_number`` is Fawry's ``paymentRefrenceNumber``."""
    return _digest(
        fawry_ref_number,
        merchant_ref_number,
        two_decimals(payment_amount),
        two_decimals(order_amount),
        order_status,
        payment_method,
        payment_reference_number or "",
        secure_key,
    )


def signature_matches(expected: str, given: object) -> bool:
    """Constant-time comparison of a computed signature with one received (any type)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())
