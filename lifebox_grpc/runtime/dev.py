"""`lifebox dev`: the whole platform on one machine, and a clean stop on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from lifebox_grpc.auth.passwords import hash_password
from lifebox_grpc.broker.files import BROKER_ADMIN, DISPATCH
from lifebox_grpc.config import PROCESS_CREDENTIALS, Mode, Settings
from lifebox_grpc.runtime.endpoints import Endpoints, resolve_endpoints
from lifebox_grpc.runtime.home import (
    CREDENTIALS_FILE,
    DevSecrets,
    load_or_create_secrets,
    prepare_home,
    write_private,
)
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.runtime.ports import free_port, port_is_free
from lifebox_grpc.runtime.postgres import DISPATCH_ROLE, EmbeddedPostgres, RolePasswords
from lifebox_grpc.store import migrations, seeds

CHILD_STOP_SECONDS = 20.0


def _say(message: str) -> None:
    print(f"lifebox dev: {message}", flush=True)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def _port_or_free(port: int, host: str) -> int:
    return port if port and port_is_free(port, host) else free_port(host)


async def _prepare_database(
    endpoints: Endpoints, settings: Settings, secrets: DevSecrets, home: Path, demo: bool
) -> None:
    conn = await asyncpg.connect(endpoints.owner_dsn)
    try:
        applied = await migrations.migrate(conn, progress=lambda line: _say(f"migrate {line}"))
        _say(f"{len(applied)} migration(s) applied" if applied else "schema is up to date")
        # --- commands (issue 14): a role made after its migration (a home from before
        # lifebox_dispatch) gets the migrations' grants now; a no-op when they are in place.
        await conn.execute("SELECT lifebox_apply_grants()")
        _say(await seeds.seed_reference(conn))
        if demo:
            _say(await seeds.seed_demo(conn, hash_password(secrets.demo_password)))
        password = (
            settings.admin_password.get_secret_value()
            if settings.admin_password
            else secrets.admin_password
        )
        created = await seeds.ensure_platform_admin(
            conn, settings.admin_email, hash_password(password)
        )
        credentials = home / CREDENTIALS_FILE
        if created or not credentials.exists():
            write_private(
                credentials,
                "# First LifeBox platform admin (super_user). Change the password after login.\n"
                f"email={settings.admin_email}\npassword={password}\n"
                + (
                    "# Demo tenant users (admin|client|operator|viewer@demo.lifebox.local):\n"
                    f"demo_password={secrets.demo_password}\n"
                    if demo
                    else ""
                ),
            )
    finally:
        await conn.close()


class _Children:
    """The serve and ingest processes; stopped in reverse order of start."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifebox_grpc.cli", name], env=env, process_group=0
        )
        self.procs.append((name, proc))

    def exited(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + CHILD_STOP_SECONDS
        for _, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_dev(settings: Settings, *, with_demo: bool, fake_fawry: bool = False) -> int:
    """Start everything, print what is where, wait for Ctrl-C (or SIGTERM), stop everything."""
    if settings.mode is not Mode.DEV:
        print("lifebox dev runs only with LIFEBOX_MODE=dev", file=sys.stderr)
        return 2
    started = time.monotonic()
    home = prepare_home(settings.home)
    # --- ops-db (issue 19): as root from a folder the servers' users cannot enter ---
    from lifebox_grpc.runtime.service_dirs import place_service_dirs

    moved = place_service_dirs(home)
    if moved is not None:
        _say(
            f"{home} is out of reach of the postgres and mosquitto users: their files are "
            f"in {moved}, linked from the home"
        )
    # --- end ops-db ---
    secrets = load_or_create_secrets(home)
    pg: EmbeddedPostgres | None = None
    broker: EmbeddedMosquitto | None = None
    children = _Children()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        if settings.database_url is None:
            pg = EmbeddedPostgres(
                home / "pg",
                RolePasswords(
                    secrets.pg_superuser_password,
                    secrets.pg_owner_password,
                    secrets.pg_app_password,
                    secrets.pg_ingest_password,
                    secrets.pg_broker_sync_password,
                    secrets.pg_dispatch_password,  # --- commands (issue 14)
                    secrets.pg_backup_password,  # --- ops-db (issue 19)
                ),
                settings.pg_port,
            )
            _say("initialising PostgreSQL 15 cluster" if not pg.initialized else "reusing cluster")
            pg.start()
            asyncio.run(pg.bootstrap())
            where = f" and {pg.socket_dir}" if pg.socket_dir else ""
            _say(f"PostgreSQL listening on 127.0.0.1:{pg.port}{where} (data in {pg.data_dir})")
        if settings.mqtt_url is None:
            broker = EmbeddedMosquitto(
                home / "mqtt",
                settings.mqtt_port,
                settings.mqtt_max_queued_mb * 1024 * 1024,
                settings.mqtt_max_inflight_messages,
                tls_dir=home / "tls",  # the device CA serve and broker-sync find by default
                tls_port=settings.mqtt_tls_port,
                mtls_port=settings.mqtt_mtls_port,
            )
            broker.start()
            _say(
                f"mosquitto listening on 127.0.0.1:{broker.port}, TLS {broker.tls_port}, "
                f"mutual TLS {broker.mtls_port}, no anonymous access (data in "
                f"{broker.base_dir}; service accounts in accounts.json, 0600; device CA "
                f"{broker.ca_path})"
            )
        endpoints = resolve_endpoints(settings)
        asyncio.run(_prepare_database(endpoints, settings, secrets, home, with_demo))

        grpc_port = _port_or_free(settings.grpc_port, settings.grpc_host)
        http_port = _port_or_free(settings.http_port, settings.http_host)
        metrics_port = _port_or_free(settings.ingest_metrics_port, settings.http_host)
        sync_metrics_port = _port_or_free(settings.broker_sync_metrics_port, settings.http_host)
        # --- commands (issue 14)
        dispatch_metrics_port = _port_or_free(settings.dispatch_metrics_port, settings.http_host)
        credentials = {
            "LIFEBOX_DATABASE_URL": endpoints.app_dsn,
            "LIFEBOX_OWNER_DATABASE_URL": endpoints.owner_dsn,
            "LIFEBOX_INGEST_DATABASE_URL": endpoints.ingest_dsn,
            "LIFEBOX_MQTT_URL": endpoints.mqtt_url,
        }
        # The embedded broker's files are reconciled by a broker-sync child with its own
        # role; an external broker is someone else's to reconcile (run broker-sync there).
        processes = ["serve", "ingest", "maintain"]
        if broker is not None:
            credentials["LIFEBOX_BROKER_SYNC_DATABASE_URL"] = endpoints.broker_sync_dsn
            credentials["LIFEBOX_BROKER_SYNC_MQTT_URL"] = broker.url_for(BROKER_ADMIN)
            processes.insert(0, "broker-sync")
        # --- commands (issue 14): `lifebox dispatch` with its own role and broker account
        # (embedded ones; configured ones otherwise, else the app role and ingest's URL).
        credentials["LIFEBOX_DISPATCH_DATABASE_URL"] = (
            pg.dsn(DISPATCH_ROLE)
            if pg is not None
            else (
                settings.dispatch_database_url.get_secret_value()
                if settings.dispatch_database_url
                else endpoints.app_dsn
            )
        )
        credentials["LIFEBOX_DISPATCH_MQTT_URL"] = (
            broker.url_for(DISPATCH)
            if broker is not None
            else (
                settings.dispatch_mqtt_url.get_secret_value()
                if settings.dispatch_mqtt_url
                else endpoints.mqtt_url
            )
        )
        processes.append("dispatch")
        # --- end commands (issue 14) ---
        # --- alarm-reactions (issue 15): `lifebox reactions` (the app role, nothing else)
        reactions_metrics_port = _port_or_free(settings.reactions_metrics_port, settings.http_host)
        processes.append("reactions")
        # --- end alarm-reactions ---
        env = {
            **{k: v for k, v in os.environ.items() if k not in credentials},
            "LIFEBOX_HOME": str(home),
            "LIFEBOX_GRPC_PORT": str(grpc_port),
            "LIFEBOX_HTTP_PORT": str(http_port),
            "LIFEBOX_INGEST_METRICS_PORT": str(metrics_port),
            "LIFEBOX_BROKER_SYNC_METRICS_PORT": str(sync_metrics_port),
            "LIFEBOX_DISPATCH_METRICS_PORT": str(dispatch_metrics_port),  # --- commands (14)
            "LIFEBOX_REACTIONS_METRICS_PORT": str(reactions_metrics_port),  # --- alarm-reactions
        }
        if broker is not None and broker.file_owner:  # mosquitto must read what it writes
            env["LIFEBOX_BROKER_FILE_OWNER"] = broker.file_owner
        if settings.jwt_signing_key is None:
            env["LIFEBOX_JWT_SIGNING_KEY"] = secrets.jwt_signing_key
        # --- billing (issue 16): `--fake-fawry` runs a local fake Fawry and points serve at it
        if fake_fawry:
            from lifebox_grpc.runtime import fake_fawry as fake

            fawry_port = _port_or_free(0, "127.0.0.1")
            webhook = f"http://{settings.http_host}:{http_port}/webhooks/fawry"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lifebox_grpc.runtime.fake_fawry",
                    "--port",
                    str(fawry_port),
                    "--webhook",
                    webhook,
                ],
                env=env,
                process_group=0,
            )
            children.procs.append(("fake-fawry", proc))
            env["LIFEBOX_FAWRY_BASE_URL"] = f"http://127.0.0.1:{fawry_port}"
            env["LIFEBOX_FAWRY_MERCHANT_CODE"] = fake.MERCHANT_CODE
            env["LIFEBOX_FAWRY_SECURE_KEY"] = fake.SECURE_KEY
            _say(f"fake Fawry on 127.0.0.1:{fawry_port} (pays every charge after 5 s)")
        # --- end billing (issue 16) ---
        for process in processes:  # each with only its own credentials
            own = PROCESS_CREDENTIALS[process]
            children.spawn(
                process,
                {
                    **env,
                    **{
                        k: v
                        for k, v in credentials.items()
                        if k.removeprefix("LIFEBOX_").lower() in own
                    },
                },
            )
        _say(
            f"ready in {time.monotonic() - started:.1f}s\n"
            f"  gRPC          {settings.grpc_host}:{grpc_port}  (health, reflection)\n"
            f"  HTTP          http://{settings.http_host}:{http_port}/healthz  /metrics\n"
            f"  ingest        metrics on http://{settings.http_host}:{metrics_port}/metrics\n"
            "  maintain      partitions made ahead / dropped past retention, hourly\n"
            + (
                f"  broker-sync   device credentials -> broker, metrics on "
                f"http://{settings.http_host}:{sync_metrics_port}/metrics\n"
                if broker is not None
                else ""
            )
            # --- commands (issue 14)
            + f"  dispatch      commands -> devices, metrics on "
            f"http://{settings.http_host}:{dispatch_metrics_port}/metrics\n"
            # --- alarm-reactions (issue 15)
             + f"  reactions     alarm reactions (commands, webhooks, e-mail), metrics on "
            f"http://{settings.http_host}:{reactions_metrics_port}/metrics\n"
            + f"  MQTT          {_without_password(endpoints.mqtt_url)}  (devices log in with "
            "their own credential: DeviceService/CreateDeviceCredential)\n"
            f"  data          {home}\n"
            f"  admin login   written to {home / CREDENTIALS_FILE} (mode 0600)\n"
            "  Ctrl-C stops everything."
        )
        while not stop.wait(0.5):
            problem = children.exited()
            if problem:
                _say(f"{problem}; stopping")
                return 1
        _say("stopping")
        return 0
    finally:
        children.stop()
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say("stopped")
