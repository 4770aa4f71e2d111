"""Fawry's signatures against fixed vectors computed independently (`sha256sum` over the
literal concatenations below, and hashlib in the tests), and amounts formatted without float.

The status vector uses the merchant code, reference and demonstration secure key printed in
Fawry's own "Get Payment Status" PHP sample (developer.fawrystaging.com); the sample does not
print the resulting digest, so it is computed here.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pytest

from lifebox_grpc.billing import signatures
from lifebox_grpc.billing.fawry import MalformedNotice, Notice, parse_json


def test_status_signature_of_fawrys_documented_sample() -> None:
    assert signatures.status_signature(
        merchant_code="1tSa6uxz2nTwlaAmt38enA==",
        merchant_ref_number="23124654641",
        secure_key="259af31fc2f74453b3a55739b21ae9ef",
    ) == ("3733ce7536d69e4b705d6239846303a27fe1951f648a7d2dda830c862a918316")


def test_notification_signature_of_a_paid_notification_sent_as_840_point_0() -> None:
    body = (
        b'{"fawryRefNumber": "765158467", "merchantRefNumber": "952897339548.1", '
        b'"paymentAmount": 840.0, "orderAmount": 840.0, "fawryFees": 0.0, '
        b'"orderStatus": "PAID", "paymentMethod": "Mobile Wallet", '
        b'"messageSignature": "d83097708940d56ff1925866677847025e6fd2961849a1ade76ca8d25702ec54"}'
    )
    notice = Notice.from_json(parse_json(body))
    assert notice.order_amount == Decimal("840.0")
    assert notice.expected_signature("secret-key-1") == (
        "d83097708940d56ff1925866677847025e6fd2961849a1ade76ca8d25702ec54"
    )
    assert notice.verified("secret-key-1")
    assert not notice.verified("secret-key-2")
    # The same, with hashlib over the documented field order (paymentRefrenceNumber empty).
    expected = hashlib.sha256(
        b"765158467952897339548.1840.00840.00PAIDMobile Walletsecret-key-1"
    ).hexdigest()
    assert notice.expected_signature("secret-key-1") == expected


def test_charge_signature_with_and_without_a_card_token() -> None:
    common: dict[str, Any] = {
        "merchant_code": "MERCH1",
        "merchant_ref_num": "LB0001",
        "customer_profile_id": "profile-7",
        "amount": Decimal("120.5"),
        "secure_key": "KEYX",
    }
    assert signatures.charge_signature(payment_method="PAYATFAWRY", card_token=None, **common) == (
        "71efc73540ec4303f215cdd230708359eda24b262b753123b8f5c34925238fed"
    )
    assert signatures.charge_signature(payment_method="CARD", card_token="tok_abc", **common) == (
        "f93775f7e9bf041a0257bbd4bb310ae3ec83779b94dc94bf86c6d793b53df016"
    )


def test_refund_signature_with_and_without_a_reason() -> None:
    assert signatures.refund_signature(
        merchant_code="MERCH1",
        reference_number="9990076204",
        refund_amount=Decimal(100),
        reason="duplicate payment",
        secure_key="KEYX",
    ) == ("e976ce44f361f5ef8814612162092037192dc07345111cd20a7948f194493ee2")
    assert signatures.refund_signature(
        merchant_code="MERCH1",
        reference_number="9990076204",
        refund_amount=Decimal("50.1"),
        reason=None,
        secure_key="KEYX",
    ) == ("8ca04efff5820d77db6cf02f737c39fa86381bab1415b171eb19346f648eef65")


@pytest.mark.parametrize(
    ("given", "signed"),
    [
        (Decimal("840.0"), "840.00"),
        (Decimal("0.1"), "0.10"),
        (Decimal("152"), "152.00"),
        (Decimal("10.005"), "10.01"),
        (Decimal("1E+3"), "1000.00"),
        ("0.30000000000000004", "0.30"),
    ],
)
def test_amounts_sign_with_two_decimals_by_decimal_arithmetic(given: object, signed: str) -> None:
    assert signatures.two_decimals(given) == signed  # type: ignore[arg-type]


def test_a_json_amount_never_passes_through_float() -> None:
    notice = Notice.from_json(
        parse_json(
            b'{"fawryRefNumber": "1", "merchantRefNumber": "m", "paymentAmount": 0.1, '
            b'"orderAmount": 1e2, "orderStatus": "NEW", "paymentMethod": "PAYATFAWRY"}'
        )
    )
    assert notice.payment_amount == Decimal("0.1")
    assert signatures.two_decimals(notice.order_amount) == "100.00"


def test_signatures_compare_in_constant_time_and_refuse_other_types() -> None:
    digest = "ab" * 32
    assert signatures.signature_matches(digest, digest.upper())
    assert not signatures.signature_matches(digest, None)
    assert not signatures.signature_matches(digest, 12)
    assert not signatures.signature_matches(digest, "ab" * 31)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"fawryRefNumber": "1"}',
        b'{"fawryRefNumber": "1", "merchantRefNumber": "m", "paymentAmount": "x", '
        b'"orderAmount": 1, "orderStatus": "PAID", "paymentMethod": "P"}',
        b'{"fawryRefNumber": "1", "merchantRefNumber": "m", "paymentAmount": 1, '
        b'"orderAmount": 1, "orderStatus": "STOLEN", "paymentMethod": "P"}',
        b'{"fawryRefNumber": "1", "merchantRefNumber": "m", "paymentAmount": -1, '
        b'"orderAmount": 1, "orderStatus": "PAID", "paymentMethod": "P"}',
    ],
)
def test_malformed_notifications_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedNotice):
        Notice.from_json(parse_json(body))


def test_express_checkout_signature_signs_items_with_two_decimal_prices() -> None:
    # sha256sum of "MERCH1LB0002profile-7https://app.example.com/donelifebox-credit1250.50KEYX"
    assert signatures.checkout_signature(
        merchant_code="MERCH1",
        merchant_ref_num="LB0002",
        customer_profile_id="profile-7",
        return_url="https://app.example.com/done",
        items=[("lifebox-credit", 1, Decimal("250.5"))],
        secure_key="KEYX",
    ) == ("f296b8f079042333cbfed928b61a2776b5c2c15283701016328196cdf79cfaa7")


def test_card_token_signatures() -> None:
    # List Card Tokens with the merchant code, profile and key of Fawry's PHP sample.
    assert signatures.card_list_signature(
        merchant_code="1tSa6uxz2nTwlaAmt38enA==",
        customer_profile_id="777777",
        secure_key="259af31fc2f74453b3a55739b21ae9ef",
    ) == ("44616f4b7830c1c88a4efd8cc8ed8f97adffaf5740e13192a449f2bb9d369967")
    assert signatures.card_delete_signature(
        merchant_code="MERCH1",
        customer_profile_id="profile-7",
        card_token="tok-abc",
        secure_key="KEYX",
    ) == ("4c3f7131b821fa40ab821665e48a6b34a4a63564ef83dd385a467125032f36fa")
