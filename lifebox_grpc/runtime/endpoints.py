"""Where the database and the broker are: configured, or the embedded ones under home."""

from __future__ import annotations

from dataclasses import dataclass

from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime import postgres
from lifebox_grpc.runtime.home import SECRETS_FILE, load_or_create_secrets


class EndpointsError(RuntimeError):
    """No database or broker is configured and no embedded one is running."""


@dataclass(frozen=True)
class Endpoints:
    app_dsn: str
    owner_dsn: str
    ingest_dsn: str
    mqtt_url: str


def _embedded_port(settings: Settings, name: str) -> int:
    try:
        return int((settings.home.resolve() / name).read_text().strip())
    except (OSError, ValueError):
        return 0


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Configured URLs win; in dev, anything unset points at the embedded services."""

    def secret(name: str) -> str | None:
        value = getattr(settings, name)
        return value.get_secret_value() if value is not None else None

    app, owner, ingest, mqtt = (
        secret("database_url"),
        secret("owner_database_url"),
        secret("ingest_database_url"),
        secret("mqtt_url"),
    )
    if None in (app, owner, ingest, mqtt) and settings.mode is Mode.DEV:
        home = settings.home.resolve()
        pg_port = _embedded_port(settings, "pg.port")
        mqtt_port = _embedded_port(settings, "mqtt/port")
        if (app is None or owner is None or ingest is None) and (
            not (home / SECRETS_FILE).exists() or not pg_port
        ):
            raise EndpointsError(
                "no database: run `lifebox dev` (embedded PostgreSQL under "
                f"{home}) or set LIFEBOX_DATABASE_URL"
            )
        s = load_or_create_secrets(home)
        sock = postgres.live_socket_dir(home / postgres.SOCKET_DIR, pg_port)
        app = app or postgres.dsn(pg_port, postgres.APP_ROLE, s.pg_app_password, socket_dir=sock)
        owner = owner or postgres.dsn(
            pg_port, postgres.OWNER_ROLE, s.pg_owner_password, socket_dir=sock
        )
        ingest = ingest or postgres.dsn(
            pg_port, postgres.INGEST_ROLE, s.pg_ingest_password, socket_dir=sock
        )
        if mqtt is None:
            if not mqtt_port:
                raise EndpointsError("no broker: run `lifebox dev` or set LIFEBOX_MQTT_URL")
            mqtt = f"mqtt://127.0.0.1:{mqtt_port}"
    if app is None or owner is None or ingest is None or mqtt is None:
        raise EndpointsError(
            "set LIFEBOX_DATABASE_URL, LIFEBOX_OWNER_DATABASE_URL, "
            "LIFEBOX_INGEST_DATABASE_URL and LIFEBOX_MQTT_URL"
        )
    return Endpoints(app, owner, ingest, mqtt)
