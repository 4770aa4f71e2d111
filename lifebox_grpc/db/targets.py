"""Which database `lifebox db` talks to, as which role: the configured DSNs, else the
embedded cluster's under the dev home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime import postgres
from lifebox_grpc.runtime.endpoints import EndpointsError
from lifebox_grpc.runtime.home import SECRETS_FILE, load_or_create_secrets


@dataclass(frozen=True)
class Conninfo:
    """A DSN split into libpq's environment variables, so that a password never appears on a
    child's command line (``ps`` shows it to every user)."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def env(self) -> dict[str, str]:
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
        }

    def with_database(self, database: str) -> Conninfo:
        return Conninfo(self.host, self.port, self.user, self.password, database)

    @property
    def dsn(self) -> str:
        if self.host.startswith("/"):
            return postgres.dsn(self.port, self.user, self.password, self.database, Path(self.host))
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.database)}"


def parse_dsn(dsn: str) -> Conninfo:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [str(parts.port or 5432)])[0])
    return Conninfo(
        host=unquote(host),
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")) or postgres.DATABASE,
    )


def _embedded(settings: Settings, role: str, setting: str) -> Conninfo:
    home = settings.home.resolve()
    try:
        port = int((home / "pg.port").read_text().strip())
    except (OSError, ValueError):
        port = 0
    if settings.mode is not Mode.DEV or not port or not (home / SECRETS_FILE).exists():
        raise EndpointsError(
            f"LIFEBOX_{setting} is not set and no embedded cluster was made under {home}: "
            "start `lifebox dev` or set it"
        )
    secrets = load_or_create_secrets(home)
    password = {
        postgres.SUPERUSER: secrets.pg_superuser_password,
        postgres.BACKUP_ROLE: secrets.pg_backup_password,
        postgres.OWNER_ROLE: secrets.pg_owner_password,
    }[role]
    socket = postgres.live_socket_dir(home / postgres.SOCKET_DIR, port)
    return Conninfo(str(socket) if socket else "127.0.0.1", port, role, password, postgres.DATABASE)


def _configured(value: object) -> str | None:
    secret = getattr(value, "get_secret_value", None)
    return str(secret()) if secret else None


def backup_target(settings: Settings) -> Conninfo:
    """The read-only backup role (lifebox_backup)."""
    configured = _configured(settings.backup_database_url)
    if configured:
        return parse_dsn(configured)
    return _embedded(settings, postgres.BACKUP_ROLE, "BACKUP_DATABASE_URL")


def superuser_target(settings: Settings) -> Conninfo:
    """A superuser in the lifebox database (restores and resets create databases)."""
    configured = _configured(settings.superuser_database_url)
    if configured:
        return parse_dsn(configured)
    return _embedded(settings, postgres.SUPERUSER, "SUPERUSER_DATABASE_URL")


def is_embedded(settings: Settings) -> bool:
    """Whether the database these commands reach is the dev home's own cluster."""
    return settings.superuser_database_url is None and settings.database_url is None
