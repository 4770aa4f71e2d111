"""Which database role and broker account `lifebox dispatch` uses."""

from __future__ import annotations

import pytest

from lifebox_grpc.commands.dispatcher import resolve
from lifebox_grpc.config import Settings


def test_the_dispatcher_uses_its_own_credentials_and_prod_requires_them() -> None:
    own = Settings(
        mode="prod",
        dispatch_database_url="postgresql://lifebox_dispatch:s3cr3t-d@db/lifebox",
        dispatch_mqtt_url="mqtt://lifebox-dispatch:s3cr3t-q@broker:1883",
    )
    assert resolve(own).dsn.startswith("postgresql://lifebox_dispatch:")
    assert resolve(own).mqtt_url.startswith("mqtt://lifebox-dispatch:")
    assert own.production_problems("dispatch") == []
    with pytest.raises(RuntimeError, match="LIFEBOX_DISPATCH_DATABASE_URL"):
        resolve(Settings(mode="prod"))
    problems = Settings(mode="prod").production_problems("dispatch")
    assert "LIFEBOX_DISPATCH_DATABASE_URL is required by `lifebox dispatch`" in problems
