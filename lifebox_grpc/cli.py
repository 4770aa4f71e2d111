"""The `lifebox` command. Every subcommand is declared in COMMANDS, and only there."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from lifebox_grpc.config import Settings, describe_settings

Handler = Callable[[argparse.Namespace, Settings], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Handler


def _no_args(_: argparse.ArgumentParser) -> None:
    pass


# -- handlers (imports are local so `lifebox --help` stays fast) ------------------------------


def _run_dev(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.runtime.dev import run_dev

    return run_dev(
        settings,
        with_demo=not args.no_demo,
        fake_fawry=args.fake_fawry,  # billing (issue 16)
    )


def _configure_dev(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-demo", action="store_true", help="don't add the demo client, users and devices"
    )
    # --- billing (issue 16) ---
    parser.add_argument(
        "--fake-fawry",
        action="store_true",
        help="run a local fake Fawry (pays each charge after 5 s and notifies the webhook)",
    )


def _run_serve(_: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.server import run_server

    return run_server(settings)


def _run_ingest(_: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.ingest.worker import run_worker

    return run_worker(settings)


def _configure_migrate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status", action="store_true", help="list applied and pending migrations, change nothing"
    )
    # --- ops-db (issue 19) ---
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the migrations that would run, in order, and change nothing",
    )
    # --- end ops-db ---


def _run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.store.admin import migrate_command

    return asyncio.run(
        migrate_command(settings, status_only=args.status, dry_run=args.dry_run)  # ops-db (19)
    )


def _configure_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo", action="store_true", help="also add a demo client, its users and devices"
    )


def _run_seed(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.store.admin import seed_command

    return asyncio.run(seed_command(settings, demo=args.demo))


def _configure_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--describe", action="store_true", help="list every setting with default and meaning"
    )


def _run_config(args: argparse.Namespace, settings: Settings) -> int:
    if args.describe:
        for env, default, description in describe_settings():
            print(f"{env:40} {default:28} {description}")
        return 0
    values = settings.masked()
    if args.json:
        print(json.dumps(values, indent=2, default=str))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            print(f"{name:{width}}  {value}")
    problems = settings.production_problems()
    for problem in problems:
        print(f"refused in {settings.mode.value} mode: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _configure_schema_doc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=None, help="where to write (default docs/schema.md)")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; fail if the file is out of date"
    )


def _run_schema_doc(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from lifebox_grpc.store.schema_doc import DEFAULT_OUTPUT, schema_doc_command

    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    return asyncio.run(schema_doc_command(settings, output, check=args.check))


def _configure_maintain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once", action="store_true", help="one pass, then exit (for cron or a job)"
    )


def _run_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.store.maintenance import run_maintain_command

    return asyncio.run(run_maintain_command(settings, once=args.once))


def _configure_loadgen(parser: argparse.ArgumentParser) -> None:
    from lifebox_grpc.loadgen.command import configure

    configure(parser)


def _run_loadgen(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.loadgen.command import run

    return run(args, settings)


# --- broker reconciler (issue 13) ---
def _configure_broker_sync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once", action="store_true", help="one reconciliation pass (if the lease is free)"
    )


def _run_broker_sync(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.broker.sync import run_broker_sync_command

    return asyncio.run(run_broker_sync_command(settings, once=args.once))


# --- device certificates (issue 13) ---
def _configure_pki(parser: argparse.ArgumentParser) -> None:
    from lifebox_grpc.broker import pki_command

    pki_command.configure(parser)


def _run_pki(args: argparse.Namespace, _: Settings) -> int:
    from lifebox_grpc.broker import pki_command

    return pki_command.run(args)


# --- ops-db (issue 19) ---
def _configure_db(parser: argparse.ArgumentParser) -> None:
    from lifebox_grpc.db import command

    command.configure(parser)


def _run_db(args: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.db import command

    return command.run(args, settings)


# --- end ops-db ---


# --- commands (issue 14) ---
def _run_dispatch(_: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.commands.dispatcher import run_dispatcher

    return run_dispatcher(settings)


# --- alarm-reactions (issue 15) ---
def _run_reactions(_: argparse.Namespace, settings: Settings) -> int:
    from lifebox_grpc.alarms.reactions.process import run_reactions

    return run_reactions(settings)


# --- end alarm-reactions ---


COMMANDS: tuple[Command, ...] = (
    Command(
        "dev",
        "run the whole platform locally: embedded PostgreSQL and mosquitto, migrations, "
        # --- alarm-reactions (issue 15): and reactions
        "seeds, serve, one ingest worker, maintain, broker-sync, dispatch and reactions",
        _configure_dev,
        _run_dev,
    ),
    Command(
        "serve", "run the gRPC API (and the HTTP health/metrics listener)", _no_args, _run_serve
    ),
    Command("ingest", "run an MQTT ingest worker", _no_args, _run_ingest),
    Command(
        "loadgen",
        "simulate devices publishing telemetry (optionally registering them first)",
        _configure_loadgen,
        _run_loadgen,
    ),
    Command("migrate", "apply pending database migrations", _configure_migrate, _run_migrate),
    Command("seed", "insert reference data (idempotent)", _configure_seed, _run_seed),
    Command(
        "maintain",
        "maintenance (partitions, billing passes) every LIFEBOX_MAINTENANCE_INTERVAL_SECONDS",
        _configure_maintain,
        _run_maintain,
    ),
    # --- broker reconciler (issue 13) ---
    Command(
        "broker-sync",
        "keep the MQTT broker's password and ACL files equal to the database's device "
        "credentials (one copy holds a lease; SIGHUPs the broker on change)",
        _configure_broker_sync,
        _run_broker_sync,
    ),
    # --- device certificates (issue 13) ---
    Command(
        "pki",
        "make the device CA and the broker's TLS certificate for a deployment (kept if they "
        "exist), and the mutual-TLS listener's start-up ACL and revocation list",
        _configure_pki,
        _run_pki,
    ),
    # --- commands (issue 14) ---
    Command(
        "dispatch",
        "publish the command outbox to devices (QoS 1, one command in flight per device; "
        "run as many as you like)",
        _no_args,
        _run_dispatch,
    ),
    # --- alarm-reactions (issue 15) ---
    Command(
        "reactions",
        "run alarm reactions from their outbox: commands, signed webhooks, e-mails (at least "
        "once; run as many as you like)",
        _no_args,
        _run_reactions,
    ),
    # --- end alarm-reactions ---
    # --- ops-db (issue 19) ---
    Command(
        "db",
        "database operations: status, backup, restore, reset (dev only)",
        _configure_db,
        _run_db,
    ),
    # --- end ops-db ---
    Command(
        "config", "print the effective settings (secrets masked)", _configure_config, _run_config
    ),
    Command(
        "schema-doc",
        "write docs/schema.md (tables, keys, mermaid diagram) from the migrated database",
        _configure_schema_doc,
        _run_schema_doc,
    ),
)


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifebox",
        description="LifeBox IoT platform. Settings come from LIFEBOX_* environment variables "
        "(`lifebox config --describe` lists them).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    from lifebox_grpc.logs import configure_logging

    configure_logging(settings, args.command)
    handler: Handler = args.handler
    if args.command in ("migrate", "seed", "maintain"):  # serve and ingest check their own
        problems = settings.production_problems(args.command)
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        if problems:
            return 2
    from lifebox_grpc.runtime.endpoints import EndpointsError
    from lifebox_grpc.store.role_checks import RoleCheckError

    try:
        return handler(args, settings)
    except (EndpointsError, RoleCheckError) as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    # --- ops-db (issue 19): a refused connection, a missing role, extension or program is
    # one line saying what is wrong and the command that fixes it, not a traceback.
    except Exception as exc:
        from lifebox_grpc.db.failures import explain

        failure = explain(exc, settings)
        if failure is None:
            raise
        print(failure.render(args.command), file=sys.stderr)
        return 2
    # --- end ops-db ---


if __name__ == "__main__":
    sys.exit(main())
