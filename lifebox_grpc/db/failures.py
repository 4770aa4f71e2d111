"""What a user meets when the database, a role, an extension or a program is missing: one
line saying what is wrong and one command that fixes it, never a traceback.

``lifebox`` wraps every command in :func:`explain`; an exception it knows becomes a
:class:`Failure`, anything else still raises (a bug should show its traceback).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.config import Mode, Settings

INSTALL_SERVER = "apt-get install postgresql-15 postgresql-15-partman"
INSTALL_CLIENT = "apt-get install postgresql-client-15"
INIT_SCRIPT = "deploy/postgres/init-lifebox.sh (as the superuser; README: external PostgreSQL)"
_EXTENSION_PACKAGES = {
    "pg_partman": "apt-get install postgresql-15-partman",
    "timescaledb": "apt-get install timescaledb-2-postgresql-15 (TimescaleDB's apt repository)",
    "pgcrypto": "apt-get install postgresql-contrib-15",
}
_CONTROL_FILE = re.compile(r'extension control file "[^"]*/([A-Za-z0-9_]+)\.control"')
_NOT_AVAILABLE = re.compile(r'extension "([A-Za-z0-9_]+)" is not available')


@dataclass(frozen=True)
class Failure:
    """What is wrong, and the one command that fixes it."""

    problem: str
    fix: str

    def render(self, command: str) -> str:
        return f"lifebox {command}: {self.problem}\n  fix: {self.fix}"


class MissingBinaryError(RuntimeError):
    """A program LifeBox runs (pg_dump, pg_restore, initdb, mosquitto) is not installed."""

    def __init__(self, program: str, install: str) -> None:
        super().__init__(f"{program} is not installed")
        self.program = program
        self.install = install


def _start_database(settings: Settings) -> str:
    if settings.mode is Mode.DEV and settings.database_url is None:
        return "lifebox dev   (starts the embedded cluster; or set the LIFEBOX_*_DATABASE_URL)"
    return "start that PostgreSQL server, or correct the LIFEBOX_*_DATABASE_URL setting"


def _extension_failure(message: str) -> Failure | None:
    match = _CONTROL_FILE.search(message) or _NOT_AVAILABLE.search(message)
    if match is None:
        return None
    name = match.group(1)
    return Failure(
        f"the PostgreSQL extension {name} is not installed on the database server",
        _EXTENSION_PACKAGES.get(name, f"install the {name} extension for PostgreSQL 15")
        + ", then run the command again",
    )


def explain(exc: BaseException, settings: Settings) -> Failure | None:
    """A :class:`Failure` for an exception a user can cause; None for anything else."""
    if isinstance(exc, MissingBinaryError):
        return Failure(str(exc), exc.install)
    if isinstance(exc, asyncpg.InvalidPasswordError):
        # With scram-sha-256 the server says the same of a role that does not exist.
        return Failure(
            f"PostgreSQL refused the login ({exc}): a wrong password, or no such role",
            "lifebox dev   (its bootstrap makes the roles and their passwords)"
            if settings.mode is Mode.DEV and settings.database_url is None
            else f"create the role with {INIT_SCRIPT}, or correct the URL's password",
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        # 28000: "role ... does not exist", or no pg_hba.conf line for this client.
        return Failure(
            f"PostgreSQL refused the login: {exc}",
            "lifebox dev   (its bootstrap makes the roles)"
            if settings.mode is Mode.DEV and settings.database_url is None
            else f"create the roles with {INIT_SCRIPT}",
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return Failure(f"the database does not exist: {exc}", f"create it with {INIT_SCRIPT}")
    if isinstance(exc, asyncpg.PostgresError):
        found = _extension_failure(str(exc))
        if found:
            return found
        if isinstance(exc, asyncpg.RaiseError) and "extension" in str(exc):
            # Our migrations' own check (0010): neither time-series extension is in place.
            return Failure(
                str(getattr(exc, "message", exc))
                + (f" ({exc.hint})" if getattr(exc, "hint", None) else ""),
                f"{INSTALL_SERVER}, then {INIT_SCRIPT}",
            )
        if isinstance(exc, asyncpg.InsufficientPrivilegeError) and "partman" in str(exc):
            return Failure(
                f"the owner role may not use pg_partman: {exc}", f"grant it with {INIT_SCRIPT}"
            )
        if isinstance(exc, asyncpg.InvalidSchemaNameError | asyncpg.UndefinedFunctionError) and (
            "partman" in str(exc)
        ):
            return Failure(
                f"pg_partman is not set up in this database: {exc}",
                f"{INSTALL_SERVER}, then {INIT_SCRIPT}",
            )
        return None
    if isinstance(exc, ConnectionRefusedError | TimeoutError) or (
        isinstance(exc, OSError) and _is_connect_error(exc)
    ):
        return Failure(f"cannot connect to PostgreSQL ({exc})", _start_database(settings))
    return _runtime_failure(exc)


def _is_connect_error(exc: OSError) -> bool:
    # asyncpg raises OSError("Multiple exceptions: ...") when every address refused.
    text = str(exc)
    return "Connect call failed" in text or "Multiple exceptions" in text


def _runtime_failure(exc: BaseException) -> Failure | None:
    from lifebox_grpc.runtime.mosquitto import MosquittoError
    from lifebox_grpc.runtime.postgres import PostgresError

    text = str(exc)
    if isinstance(exc, PostgresError):
        if "not found" in text or "is not installed" in text:
            return Failure(text.split(":")[0], INSTALL_SERVER)
        return Failure(f"the embedded PostgreSQL failed: {text}", "see the log it names")
    if isinstance(exc, MosquittoError):
        if "not found" in text:
            return Failure("mosquitto is not installed", "apt-get install mosquitto")
        return Failure(f"the embedded mosquitto failed: {text}", "see the log it names")
    return None
