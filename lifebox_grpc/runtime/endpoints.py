"""Where the database and the broker are: configured, or the embedded ones under home."""

from __future__ import annotations

from dataclasses import dataclass

from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime import postgres
from lifebox_grpc.runtime.home import SECRETS_FILE, load_or_create_secrets
from lifebox_grpc.runtime.mosquitto import embedded_mqtt_url


class EndpointsError(RuntimeError):
    """No database or broker is configured and no embedded one is running."""


@dataclass(frozen=True)
class Endpoints:
    """The credentials this process was given. Each process holds only its own (README: who
    holds what); asking for one it was not given is an :class:`EndpointsError` naming it."""

    app: str | None
    owner: str | None
    ingest: str | None
    mqtt: str | None
    missing_hint: str = ""
    broker: str | None = None  # --- broker reconciler (issue 13): broker-sync's DSN

    def _need(self, value: str | None, setting: str) -> str:
        if value is None:
            raise EndpointsError(f"{setting} is not set{self.missing_hint}")
        return value

    @property
    def app_dsn(self) -> str:
        return self._need(self.app, "LIFEBOX_DATABASE_URL")

    @property
    def owner_dsn(self) -> str:
        return self._need(self.owner, "LIFEBOX_OWNER_DATABASE_URL")

    @property
    def ingest_dsn(self) -> str:
        return self._need(self.ingest, "LIFEBOX_INGEST_DATABASE_URL")

    @property
    def mqtt_url(self) -> str:
        return self._need(self.mqtt, "LIFEBOX_MQTT_URL")

    # --- broker reconciler (issue 13) ---
    @property
    def broker_sync_dsn(self) -> str:
        return self._need(self.broker, "LIFEBOX_BROKER_SYNC_DATABASE_URL")


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
    broker = secret("broker_sync_database_url")  # --- broker reconciler (issue 13)
    if None in (app, owner, ingest, mqtt, broker) and settings.mode is Mode.DEV:
        home = settings.home.resolve()
        pg_port = _embedded_port(settings, "pg.port")
        mqtt_port = _embedded_port(settings, "mqtt/port")
        if (home / SECRETS_FILE).exists() and pg_port:
            s = load_or_create_secrets(home)
            sock = postgres.live_socket_dir(home / postgres.SOCKET_DIR, pg_port)
            app = app or postgres.dsn(
                pg_port, postgres.APP_ROLE, s.pg_app_password, socket_dir=sock
            )
            owner = owner or postgres.dsn(
                pg_port, postgres.OWNER_ROLE, s.pg_owner_password, socket_dir=sock
            )
            ingest = ingest or postgres.dsn(
                pg_port, postgres.INGEST_ROLE, s.pg_ingest_password, socket_dir=sock
            )
            # --- broker reconciler (issue 13) ---
            broker = broker or postgres.dsn(
                pg_port, postgres.SYNC_ROLE, s.pg_broker_sync_password, socket_dir=sock
            )
        if mqtt is None and mqtt_port:
            # --- broker reconciler (issue 13): no anonymous access; ingest's own account.
            mqtt = embedded_mqtt_url(home / "mqtt", mqtt_port)
        hint = f" and no embedded one runs under {home}: start `lifebox dev` or set it"
    else:
        hint = " (each process needs its own: README, who holds what)"
    return Endpoints(app, owner, ingest, mqtt, hint, broker)
