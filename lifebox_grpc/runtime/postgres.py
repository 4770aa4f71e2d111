"""An embedded PostgreSQL 15 cluster made with Debian's server binaries.

The cluster lives in one folder, listens on loopback TCP and on a Unix socket in a private
folder beside its data (``pg-socket``, mode 0700: only the user that runs it, and root, can
reach the socket), authenticates with scram-sha-256 on both, and runs as a dedicated system
user when we are root (PostgreSQL refuses to run as root). Our own processes connect through
the socket, which skips the TCP stack on every round trip (measured here: a three-statement
transaction took 297 µs instead of 384). Three login roles are made at bootstrap:

* ``lifebox_owner`` owns the database and the schema; migrations run as it.
* ``lifebox_app`` is what ``serve`` connects as: not the owner, no BYPASSRLS, so row-level
  security always applies to it.
* ``lifebox_ingest`` is what ``ingest`` connects as: BYPASSRLS because PostgreSQL refuses
  ``COPY FROM`` under row-level security, and for that reason granted nothing but the few
  INSERTs and SELECTs the ingest path needs (see the migrations).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from lifebox_grpc.runtime.ports import free_port, port_is_free, private_log

log = logging.getLogger(__name__)

PG_VERSION = "15"
PG_BIN = Path(os.environ.get("LIFEBOX_PG_BIN", f"/usr/lib/postgresql/{PG_VERSION}/bin"))
DATABASE = "lifebox"
SUPERUSER = "postgres"
OWNER_ROLE = "lifebox_owner"
APP_ROLE = "lifebox_app"
INGEST_ROLE = "lifebox_ingest"
# --- broker reconciler (issue 13) ---
SYNC_ROLE = "lifebox_broker_sync"  # `lifebox broker-sync`: SELECT on what it reads (0050)
# --- commands (issue 14) ---
DISPATCH_ROLE = "lifebox_dispatch"  # `lifebox dispatch`: the outbox and its commands (0060)
# --- ops-db (issue 19) ---
# `lifebox db backup`: BYPASSRLS (a dump must see every tenant's rows; RLS is forced) and a
# member of pg_read_all_data (SELECT on every table, sequence and chunk, present and future,
# whatever the migrations revoke from time-series children), nothing else.
BACKUP_ROLE = "lifebox_backup"
_BACKUP_ATTRS = "NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE"
SERVICE_USER = "postgres"  # Debian's postgresql package creates it.


class PostgresError(RuntimeError):
    """The embedded cluster could not be created, started or bootstrapped."""


@dataclass(frozen=True)
class RolePasswords:
    superuser: str
    owner: str
    app: str
    ingest: str
    broker_sync: str = ""  # --- broker reconciler (issue 13): empty = no lifebox_broker_sync role
    dispatch: str = ""  # --- commands (issue 14): empty = no lifebox_dispatch role
    backup: str = ""  # --- ops-db (issue 19): empty = no lifebox_backup role


# --- broker reconciler (issue 13): reads the credentials on the staff path, no BYPASSRLS.
_SYNC_ATTRS = "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"

SOCKET_DIR = "pg-socket"  # beside the data folder
_HBA_LOCAL = "local all all scram-sha-256"
_SUN_PATH_MAX = 107  # bytes of a socket path, less the terminating NUL (Linux)


def dsn(
    port: int, role: str, password: str, database: str = DATABASE, socket_dir: Path | None = None
) -> str:
    """A role's URL: through the Unix socket in ``socket_dir`` if given, else loopback TCP."""
    auth = f"{role}:{quote(password, safe='')}"
    if socket_dir is not None:
        return f"postgresql://{auth}@/{database}?host={quote(str(socket_dir))}&port={port}"
    return f"postgresql://{auth}@127.0.0.1:{port}/{database}"


def _socket_path(socket_dir: Path, port: int) -> Path:
    return socket_dir / f".s.PGSQL.{port}"


def live_socket_dir(socket_dir: Path, port: int) -> Path | None:
    """``socket_dir`` if the server on ``port`` listens there, else None (connect by TCP)."""
    try:
        return socket_dir if port and _socket_path(socket_dir, port).is_socket() else None
    except OSError:  # a folder we may not enter: its socket is not ours to use
        return None


def _service_user() -> pwd.struct_passwd | None:
    """The user the server runs as: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise PostgresError(
            f"running as root needs the system user {SERVICE_USER!r} "
            "(apt-get install postgresql-15 creates it)"
        ) from exc


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


class EmbeddedPostgres:
    """A PostgreSQL server process that we own: init once, start, stop."""

    def __init__(
        self, data_dir: Path, passwords: RolePasswords, port: int = 0, *, timescaledb: bool = False
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.passwords = passwords
        self.requested_port = port
        # Preload TimescaleDB and create the extension: time series become hypertables.
        self.timescaledb = timescaledb
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._user = _service_user()
        self.socket_dir: Path | None = None  # set by start() when the path fits

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Run initdb once; a cluster that exists is reused as is."""
        if self.initialized:
            return
        initdb = PG_BIN / "initdb"
        if not initdb.exists():
            raise PostgresError(
                f"{initdb} not found: install PostgreSQL 15 "
                "(apt-get install postgresql-15 postgresql-15-partman)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        _chown_tree(self.data_dir, self._user)
        with tempfile.NamedTemporaryFile("w", delete=False, prefix="lifebox-pw-") as pwfile:
            pwfile.write(self.passwords.superuser + "\n")
        pw_path = Path(pwfile.name)
        try:
            if self._user is not None:
                os.chown(pw_path, self._user.pw_uid, self._user.pw_gid)
            self._run(
                [
                    str(initdb),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pw_path}",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pw_path.unlink(missing_ok=True)
        self._write_conf()

    def _write_conf(self) -> None:
        conf = self.data_dir / "postgresql.auto.conf"
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",  # start() names the private folder on argv
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "synchronous_commit": "on",
            "fsync": "on",
            "wal_level": "replica",
            "max_wal_size": "'2GB'",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "password_encryption": "'scram-sha-256'",
            "timezone": "'UTC'",
        }
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.data_dir / "pg_hba.conf").write_text(
            "# The private Unix socket and loopback TCP only, passwords always (scram-sha-256).\n"
            f"{_HBA_LOCAL}\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        _chown_tree(self.data_dir, self._user)

    def _ensure_local_hba(self) -> None:
        """A cluster made before the socket existed gets its line, first; nothing else in
        the file (an operator's own lines) is touched."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        if any(line.split()[:1] == ["local"] for line in lines):
            return
        hba.write_text("\n".join([_HBA_LOCAL, *lines]) + "\n")

    def _prepare_socket_dir(self, port: int) -> Path | None:
        """The private socket folder, or None when its path would be too long for a socket."""
        folder = self.data_dir.parent / SOCKET_DIR
        if len(os.fsencode(_socket_path(folder, port))) > _SUN_PATH_MAX:
            log.warning("%s is too deep for a Unix socket: connecting over TCP only", folder)
            return None
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
        _chown_tree(folder, self._user)
        return folder

    def start(self, timeout: float = 60.0) -> int:
        """Start the server in the foreground as our child; return the port it listens on."""
        if self._process is not None:
            return self.port
        if self.timescaledb and not timescaledb_available():
            raise PostgresError(
                f"TimescaleDB is not installed for PostgreSQL {PG_VERSION} "
                f"({_extension_control('timescaledb')} is missing)"
            )
        self.init()
        port = self.requested_port or _remembered_port(self.data_dir)
        if not port or not port_is_free(port):
            port = free_port()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists() and not _pid_alive(stale):
            stale.unlink()
        self._ensure_local_hba()
        socket_dir = self._prepare_socket_dir(port)
        try:
            return self._launch(port, socket_dir, timeout)
        except PostgresError as exc:
            # Some file systems (FUSE and virtiofs mounts) and confinement profiles refuse
            # Unix sockets or their lock files; the server then refuses to start at all.
            # Once more without the socket: TCP alone works, and any other failure repeats.
            if socket_dir is None or str(socket_dir) not in str(exc):
                raise
            log.warning("postgres could not use %s: connecting over TCP only", socket_dir)
            return self._launch(port, None, timeout)

    def _launch(self, port: int, socket_dir: Path | None, timeout: float) -> int:
        log_path = self.data_dir.parent / "postgres.log"
        log_file = private_log(log_path)
        self._process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                *("-D", str(self.data_dir), "-p", str(port)),
                *("-k", str(socket_dir) if socket_dir else ""),
                *self._extension_options(),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            process_group=0,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
        log_file.close()
        self.port = port
        self.socket_dir = socket_dir
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code, self._process = self._process.returncode, None
                raise PostgresError(
                    f"postgres exited with {code}; see {log_path}:\n" + _tail(log_path)
                )
            if self._ready():
                (self.data_dir.parent / "pg.port").write_text(f"{port}\n")
                return port
            time.sleep(0.05)
        self.stop()
        raise PostgresError(f"postgres did not accept connections in {timeout}s; see {log_path}")

    def _extension_options(self) -> list[str]:
        """Server options on argv, so a cluster made without them gets them on its next start."""
        if not self.timescaledb:
            return []
        # telemetry_level off: the extension never reports to its vendor from our clusters.
        return [
            "-c",
            "shared_preload_libraries=timescaledb",
            "-c",
            "timescaledb.telemetry_level=off",
        ]

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return result.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(2)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(
            argv,
            capture_output=True,
            check=False,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            cwd="/",
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{Path(argv[0]).name} failed: {result.stderr.decode(errors='replace')}"
            )

    # -- roles and database -------------------------------------------------------------------

    def dsn(self, role: str) -> str:
        password = {
            SUPERUSER: self.passwords.superuser,
            OWNER_ROLE: self.passwords.owner,
            APP_ROLE: self.passwords.app,
            INGEST_ROLE: self.passwords.ingest,
            SYNC_ROLE: self.passwords.broker_sync,  # --- broker reconciler (issue 13)
            DISPATCH_ROLE: self.passwords.dispatch,  # --- commands (issue 14)
            BACKUP_ROLE: self.passwords.backup,  # --- ops-db (issue 19)
        }[role]
        database = "postgres" if role == SUPERUSER else DATABASE
        return dsn(self.port, role, password, database, self.socket_dir)

    async def bootstrap(self) -> None:
        """Create the roles, the database and the extensions; safe to run on every start."""
        conn = await asyncpg.connect(self.dsn(SUPERUSER))
        try:
            for role, password, attrs in (
                # No role may create roles: no migration needs it, and on PostgreSQL 15
                # CREATEROLE lets a role grant itself pg_execute_server_program.
                (OWNER_ROLE, self.passwords.owner, "NOSUPERUSER NOBYPASSRLS NOCREATEROLE"),
                (APP_ROLE, self.passwords.app, "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
                (
                    INGEST_ROLE,
                    self.passwords.ingest,
                    "NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE",
                ),
                # --- broker reconciler (issue 13) ---
                *(
                    [(SYNC_ROLE, self.passwords.broker_sync, _SYNC_ATTRS)]
                    if self.passwords.broker_sync
                    else []
                ),
                # --- commands (issue 14): no BYPASSRLS (it reads on the staff path; its
                # start refuses a role that bypasses RLS), granted by rows of 0060.
                *(
                    [(DISPATCH_ROLE, self.passwords.dispatch, _SYNC_ATTRS)]
                    if self.passwords.dispatch
                    else []
                ),
                # --- ops-db (issue 19) ---
                *(
                    [(BACKUP_ROLE, self.passwords.backup, _BACKUP_ATTRS)]
                    if self.passwords.backup
                    else []
                ),
            ):
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                verb = "ALTER" if exists else "CREATE"
                # Role names are our constants; the password is passed as a literal because
                # CREATE ROLE takes no parameters. quote_literal is done by the server.
                literal = await conn.fetchval("SELECT quote_literal($1)", password)
                await conn.execute(f"{verb} ROLE {role} LOGIN {attrs} PASSWORD {literal}")
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(
            dsn(self.port, SUPERUSER, self.passwords.superuser, DATABASE, self.socket_dir)
        )
        try:
            # Only the superuser may create these; the migrations find them in place.
            await conn.execute(
                f"""
                REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;
                GRANT CONNECT ON DATABASE {DATABASE} TO {APP_ROLE}, {INGEST_ROLE};
                REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                ALTER SCHEMA public OWNER TO {OWNER_ROLE};
                CREATE EXTENSION IF NOT EXISTS pgcrypto;
                CREATE SCHEMA IF NOT EXISTS partman AUTHORIZATION {OWNER_ROLE};
                """
            )
            if await conn.fetchval(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'"
            ):
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
                await conn.execute(
                    f"""
                    GRANT ALL ON SCHEMA partman TO {OWNER_ROLE};
                    GRANT ALL ON ALL TABLES IN SCHEMA partman TO {OWNER_ROLE};
                    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA partman TO {OWNER_ROLE};
                    GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA partman TO {OWNER_ROLE};
                    """
                )
            if self.timescaledb:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            if self.passwords.broker_sync:  # --- broker reconciler (issue 13)
                await conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {SYNC_ROLE}")
            if self.passwords.dispatch:  # --- commands (issue 14)
                await conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {DISPATCH_ROLE}")
            if self.passwords.backup:  # --- ops-db (issue 19)
                await conn.execute(grant_backup_sql(DATABASE))
        finally:
            await conn.close()


# --- ops-db (issue 19) ---
def grant_backup_sql(database: str) -> str:
    """What makes :data:`BACKUP_ROLE` able to dump ``database`` (run as a superuser, after
    the role exists): connect, and read everything through pg_read_all_data."""
    return (
        f"GRANT CONNECT ON DATABASE {database} TO {BACKUP_ROLE};\n"
        f"GRANT pg_read_all_data TO {BACKUP_ROLE};\n"
    )


def _extension_control(name: str) -> Path:
    share = Path(os.environ.get("LIFEBOX_PG_SHARE", f"/usr/share/postgresql/{PG_VERSION}"))
    return share / "extension" / f"{name}.control"


def timescaledb_available() -> bool:
    """Whether this machine's PostgreSQL 15 has the TimescaleDB extension installed."""
    return _extension_control("timescaledb").exists()


def _remembered_port(data_dir: Path) -> int:
    path = data_dir.parent / "pg.port"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def server_binaries_present() -> bool:
    return (PG_BIN / "postgres").exists() and shutil.which("mosquitto") is not None
