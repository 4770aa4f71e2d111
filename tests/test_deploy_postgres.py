"""deploy/postgres/init-lifebox.sh on a bare PostgreSQL 15, as README tells an operator to run
it: roles without powers they do not need, the storage extension the server has, passwords
never on a command line, and a database the migrations then complete as the owner."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from lifebox_grpc.commands.dispatcher import role_problems as dispatch_role_problems
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.runtime.postgres import (
    APP_ROLE,
    DISPATCH_ROLE,
    INGEST_ROLE,
    OWNER_ROLE,
    SUPERUSER,
    EmbeddedPostgres,
    RolePasswords,
    dsn,
)
from lifebox_grpc.store import migrations
from lifebox_grpc.store.pool import tenant_transaction
from lifebox_grpc.store.role_checks import role_problems
from tests.helpers.compose import ROOT, dotenv, effective_argv, service_environment
from tests.helpers.compose import services as compose_services
from tests.helpers.ingest import publisher, register_fleet
from tests.helpers.services import (
    STORAGE_PATHS,
    TIMESCALEDB,
    private_tmpdir,
    run_blocking,
    running_broker,
    storage_unavailable,
)
from tests.helpers.wait import async_wait_until, wait_until

INIT = Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "init-lifebox.sh"


@pytest.fixture(params=STORAGE_PATHS)
def bare_cluster(request: pytest.FixtureRequest) -> Iterator[EmbeddedPostgres]:
    """A started cluster with nothing of ours in it: no roles, no database."""
    reason = storage_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    base = private_tmpdir("lifebox-test-init-")
    passwords = RolePasswords(*(secrets.token_urlsafe(16) for _ in range(4)))
    server = EmbeddedPostgres(base / "pg", passwords, timescaledb=request.param == TIMESCALEDB)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _run_init(server: EmbeddedPostgres, passwords: dict[str, str]) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": SUPERUSER,
        "PGPASSWORD": server.passwords.superuser,
        **passwords,
    }
    result = subprocess.run(
        ["bash", str(INIT)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_the_init_script_prepares_a_bare_server_for_the_migrations(
    bare_cluster: EmbeddedPostgres,
) -> None:
    server = bare_cluster
    passwords = {
        "LIFEBOX_OWNER_PASSWORD": secrets.token_urlsafe(16),
        "LIFEBOX_APP_PASSWORD": secrets.token_urlsafe(16),
        "LIFEBOX_INGEST_PASSWORD": secrets.token_urlsafe(16),
        "LIFEBOX_DISPATCH_PASSWORD": secrets.token_urlsafe(16),  # --- commands (issue 14)
        "LIFEBOX_BACKUP_PASSWORD": secrets.token_urlsafe(16),  # --- backups (issue 19)
    }
    _run_init(server, passwords)
    owner = await asyncpg.connect(dsn(server.port, OWNER_ROLE, passwords["LIFEBOX_OWNER_PASSWORD"]))
    try:
        assert await migrations.migrate(owner), "no migration applied"
        storage = await owner.fetchval(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') "
            "THEN 'timescaledb' ELSE 'partman' END"
        )
        assert storage == ("timescaledb" if server.timescaledb else "partman")
        roles = {
            r["rolname"]: r
            for r in await owner.fetch(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
                "WHERE rolname = ANY($1::text[])",
                [OWNER_ROLE, APP_ROLE, INGEST_ROLE],
            )
        }
        assert set(roles) == {OWNER_ROLE, APP_ROLE, INGEST_ROLE}
        assert not any(r["rolsuper"] or r["rolcreaterole"] for r in roles.values())
        assert [name for name, r in roles.items() if r["rolbypassrls"]] == [INGEST_ROLE]
        if server.timescaledb:
            level = await owner.fetchval("SHOW timescaledb.telemetry_level")
            assert level == "off"
    finally:
        await owner.close()
    for role, process in ((APP_ROLE, "serve"), (INGEST_ROLE, "ingest")):
        password = passwords[f"LIFEBOX_{role.removeprefix('lifebox_').upper()}_PASSWORD"]
        conn = await asyncpg.connect(dsn(server.port, role, password))
        try:
            assert await role_problems(conn, process) == []
        finally:
            await conn.close()
    # --- commands (issue 14): the dispatcher's role, fit for `lifebox dispatch`, granted
    # what migration 0060's rows give it (the outbox) and nothing of the API's (users).
    conn = await asyncpg.connect(
        dsn(server.port, DISPATCH_ROLE, passwords["LIFEBOX_DISPATCH_PASSWORD"])
    )
    try:
        assert await dispatch_role_problems(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM command_outbox") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM users")
    finally:
        await conn.close()
    # --- backups (issue 19): `lifebox db backup`'s role reads every tenant's rows (RLS is
    # forced, so only through BYPASSRLS) and writes nothing.
    conn = await asyncpg.connect(
        dsn(server.port, "lifebox_backup", passwords["LIFEBOX_BACKUP_PASSWORD"])
    )
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0
        assert await conn.fetchval(
            "SELECT rolbypassrls AND pg_has_role('lifebox_backup', 'pg_read_all_data', 'member') "
            "AND NOT rolsuper FROM pg_roles WHERE rolname = 'lifebox_backup'"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM schema_migrations")
    finally:
        await conn.close()


async def test_the_init_script_makes_no_dispatch_role_without_its_password(
    bare_cluster: EmbeddedPostgres,
) -> None:
    server = bare_cluster
    passwords = {
        name: secrets.token_urlsafe(16)
        for name in ("LIFEBOX_OWNER_PASSWORD", "LIFEBOX_APP_PASSWORD", "LIFEBOX_INGEST_PASSWORD")
    }
    _run_init(server, passwords)
    owner = await asyncpg.connect(dsn(server.port, OWNER_ROLE, passwords["LIFEBOX_OWNER_PASSWORD"]))
    try:
        made = await owner.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", DISPATCH_ROLE)
    finally:
        await owner.close()
    assert made is None


def test_no_password_is_ever_on_a_command_line_in_deploy() -> None:
    """ps shows every process's argv to every local user: secrets go by file or environment."""
    deploy = Path(__file__).resolve().parents[1] / "deploy"
    compose = (Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text()
    texts = {str(p): p.read_text() for p in deploy.rglob("*") if p.is_file()}
    texts["docker-compose.yml"] = compose
    offenders = [
        f"{name}: {line.strip()}"
        for name, text in texts.items()
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        and any(
            marker in line
            for marker in ("mosquitto_passwd -b", " -P ", "_pw=", "--password", "PGPASSWORD=")
        )
    ]
    assert offenders == []


# --- ops-deploy (issue 19) ---
def test_the_init_script_is_safe_to_run_again(bare_cluster: EmbeddedPostgres) -> None:
    """A second run (an operator re-running README's line, or a half-finished first run)
    keeps what exists: the roles' passwords too."""
    passwords = {
        name: secrets.token_urlsafe(16)
        for name in ("LIFEBOX_OWNER_PASSWORD", "LIFEBOX_APP_PASSWORD", "LIFEBOX_INGEST_PASSWORD")
    }
    _run_init(bare_cluster, passwords)
    _run_init(bare_cluster, {k: secrets.token_urlsafe(16) for k in passwords})

    async def owner_logs_in_with_the_first_password() -> None:
        conn = await asyncpg.connect(
            dsn(bare_cluster.port, OWNER_ROLE, passwords["LIFEBOX_OWNER_PASSWORD"])
        )
        await conn.close()

    run_blocking(owner_logs_in_with_the_first_password())


LIFEBOX = Path(sys.executable).parent / "lifebox"  # the console script, as the image runs it


@dataclass
class Deployment:
    """compose's services, as processes here: their environment from docker-compose.yml (a
    .env made from .env.example), hosts, ports and paths moved to this machine."""

    base: Path
    database_port: int
    dotenv: dict[str, str]
    moves: dict[str, str]
    processes: list[subprocess.Popen[bytes]]

    def env(self, service: str, **extra: str) -> dict[str, str]:
        env = service_environment(compose_services()[service], self.dotenv)
        for key, value in env.items():
            for shipped, here in self.moves.items():
                value = value.replace(shipped, here)
            env[key] = value
        return {"PATH": f"{LIFEBOX.parent}:{os.environ['PATH']}", **env, **extra}

    def run(self, service: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """A one-shot service's argv, exactly as compose gives it (sh -c chain included)."""
        argv = effective_argv(compose_services()[service], self.dotenv)
        return subprocess.run(
            argv, env=self.env(service, **extra), capture_output=True, text=True, timeout=300
        )

    def start(self, service: str, **extra: str) -> subprocess.Popen[bytes]:
        argv = effective_argv(compose_services()[service], self.dotenv)
        log = (self.base / f"{service}.log").open("ab")
        process = subprocess.Popen(argv, env=self.env(service, **extra), stderr=log, stdout=log)
        self.processes.append(process)
        return process

    def healthy(self, service: str, ports: dict[str, int]) -> bool:
        """compose's healthcheck command for the service, its ports moved here."""
        test = list(compose_services()[service]["healthcheck"]["test"])
        assert test[:2] == ["CMD", "python"]
        code = test[3]
        for shipped, here in ports.items():
            code = code.replace(f"127.0.0.1:{shipped}/", f"127.0.0.1:{here}/")
        return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0

    def log(self, service: str) -> str:
        return (self.base / f"{service}.log").read_text(errors="replace")


@pytest.fixture
def deployment(bare_cluster: EmbeddedPostgres) -> Iterator[Deployment]:
    """README's external-PostgreSQL walk-through: init-lifebox.sh run once as the superuser
    with the passwords compose gives the database service, then compose's processes."""
    base = private_tmpdir("lifebox-test-deploy-")
    values = dotenv()
    init_env = service_environment(compose_services()["timescaledb"], values)
    _run_init(bare_cluster, {k: v for k, v in init_env.items() if k.startswith("LIFEBOX_")})
    pki = base / "pki"
    made = subprocess.run(
        [str(LIFEBOX), "pki", "--dir", str(pki), "--hostname", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    moves = {
        "@timescaledb:5432/": f"@127.0.0.1:{bare_cluster.port}/",
        "/app/migrations": str(ROOT / "migrations"),
        "/app/data": str(base / "home"),
        "/pki/": f"{pki}/",
        "/certs/tls.crt": str(pki / "broker.crt"),  # any certificate serve can present
        "/certs/tls.key": str(pki / "broker.key"),
        "0.0.0.0": "127.0.0.1",  # nothing of a test listens beyond this machine
    }
    deployed = Deployment(base, bare_cluster.port, values, moves, [])
    try:
        yield deployed
    finally:
        for process in deployed.processes:
            process.terminate()
        for process in deployed.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


async def test_compose_processes_run_against_an_external_postgresql_set_up_as_readme_says(
    deployment: Deployment, bare_cluster: EmbeddedPostgres
) -> None:
    """migrate && seed (compose's one-shot, twice: the second is a no-op), then serve and
    ingest in prod mode with only their own credentials: both pass compose's healthchecks,
    and a reading a device publishes lands in the external database."""
    d = deployment
    for attempt in (1, 2):
        done = d.run("migrate")
        assert done.returncode == 0, f"run {attempt}: {done.stdout}\n{done.stderr}"
    owner_dsn = dsn(bare_cluster.port, OWNER_ROLE, d.dotenv["LIFEBOX_OWNER_PASSWORD"])
    owner = await asyncpg.connect(owner_dsn)
    try:
        assert await migrations.pending(owner) == []
        async with tenant_transaction(owner, None, staff=True):
            seeded = await owner.fetchval(
                "SELECT count(*) FROM command_templates WHERE client_id IS NULL"
            )
        assert seeded > 0, "seed made no reference data"
    finally:
        await owner.close()

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    serve = d.start(
        "serve",
        LIFEBOX_GRPC_PORT=str(grpc_port),
        LIFEBOX_HTTP_PORT=str(http_port),
    )
    with running_broker() as broker:
        ingest = d.start(
            "ingest",
            LIFEBOX_MQTT_URL=broker.url,
            LIFEBOX_INGEST_METRICS_PORT=str(metrics_port),
            LIFEBOX_INGEST_CLIENT_ID=f"test-deploy-{secrets.token_hex(4)}",
        )
        for name, process, ports in (
            ("serve", serve, {"8080": http_port}),
            ("ingest", ingest, {"9108": metrics_port}),
        ):
            wait_until(
                lambda n=name, p=process, m=ports: p.poll() is not None or d.healthy(n, m),
                90,
                f"{name} healthy by compose's healthcheck",
            )
            assert process.poll() is None, f"{name} exited:\n{d.log(name)}"
        fleet = await register_fleet(owner_dsn, 1)
        device_id, serial = fleet.devices[0]
        reading = {"ts": int(time.time() * 1000), "temperature_c": 21.5}
        with publisher(broker.port) as pub:
            pub.publish_all([(f"lifebox/v1/{serial}/telemetry", json.dumps(reading).encode())])
        owner = await asyncpg.connect(owner_dsn)
        try:

            async def landed() -> float | None:
                async with tenant_transaction(owner, None, staff=True):
                    value = await owner.fetchval(
                        "SELECT temperature_c FROM telemetry_events WHERE device_id = $1",
                        device_id,
                    )
                return None if value is None else float(value)

            assert await async_wait_until(landed, 60, "the reading in the database") == 21.5
        finally:
            await owner.close()
        assert ingest.poll() is None, d.log("ingest")
    # Prod logs are JSON lines; no process printed a traceback.
    for name in ("serve", "ingest"):
        assert "Traceback" not in d.log(name), d.log(name)
