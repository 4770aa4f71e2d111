"""The fake Fawry the billing tests run against: it lives in ``lifebox_grpc.runtime`` (beside
the embedded PostgreSQL and mosquitto launchers) so `lifebox dev --fake-fawry` can start it
too; serve never imports it."""

from __future__ import annotations

from lifebox_grpc.runtime.fake_fawry import (
    MERCHANT_CODE,
    SECURE_KEY,
    FakeCharge,
    FakeFawry,
    post,
)

__all__ = ["MERCHANT_CODE", "SECURE_KEY", "FakeCharge", "FakeFawry", "post"]
