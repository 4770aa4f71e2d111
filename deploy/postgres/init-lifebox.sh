#!/bin/bash
# One-time setup of an external PostgreSQL 15 for LifeBox, as a superuser: the database, its
# roles and the extensions only a superuser may create. Migrations then run as lifebox_owner.
# The TimescaleDB image runs it on first boot (docker-entrypoint-initdb.d); on any other
# server run it once with the superuser's connection in the usual PG* variables:
#   LIFEBOX_OWNER_PASSWORD=… LIFEBOX_APP_PASSWORD=… LIFEBOX_INGEST_PASSWORD=… \
#     PGHOST=db PGUSER=postgres bash deploy/postgres/init-lifebox.sh
# Time series go to TimescaleDB when the server preloads it, else to pg_partman (schema
# partman, owned by lifebox_owner so the migrations can make and maintain partitions); it
# stops before changing anything, saying what to install, when the server has neither.
# Safe to run again: what exists is kept (a role's password too; ALTER ROLE changes it).
# Passwords are read from the environment by psql itself (\getenv), never put on a command
# line, where any local user could read them in the process list.
set -euo pipefail
: "${LIFEBOX_OWNER_PASSWORD:?}" "${LIFEBOX_APP_PASSWORD:?}" "${LIFEBOX_INGEST_PASSWORD:?}"
superuser=${POSTGRES_USER:-${PGUSER:-postgres}}
run_psql() { psql -X -v ON_ERROR_STOP=1 --username "$superuser" "$@"; }

storage=$(run_psql --dbname postgres -tA <<'SQL'
SELECT CASE
  WHEN current_setting('shared_preload_libraries') ~ '(^|[ ,])timescaledb($|[ ,])' THEN 'timescaledb'
  WHEN EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman') THEN 'partman'
  ELSE 'none' END;
SQL
)
if [ "$storage" = none ]; then
  cat >&2 <<'EOF'
init-lifebox.sh: this server has neither TimescaleDB preloaded nor pg_partman installed, and
LifeBox keeps its time series in one of them. Nothing was changed. Either install pg_partman
  (Debian/Ubuntu: apt-get install postgresql-15-partman)
or preload TimescaleDB (shared_preload_libraries = 'timescaledb' in postgresql.conf, restart),
then run this script again.
EOF
  exit 1
fi
echo "init-lifebox.sh: time series in ${storage/partman/pg_partman}"

run_psql --dbname postgres <<'SQL'
\getenv owner_pw LIFEBOX_OWNER_PASSWORD
\getenv app_pw LIFEBOX_APP_PASSWORD
\getenv ingest_pw LIFEBOX_INGEST_PASSWORD
-- No role creates roles (no migration needs it; on PostgreSQL 15 CREATEROLE lets a role
-- grant itself pg_execute_server_program). Only ingest bypasses row-level security: COPY
-- cannot run under it, so that role is granted nothing but its INSERTs.
SELECT format('CREATE ROLE lifebox_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE PASSWORD %L',
              :'owner_pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_owner') \gexec
SELECT format('CREATE ROLE lifebox_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE '
              'PASSWORD %L', :'app_pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_app') \gexec
SELECT format('CREATE ROLE lifebox_ingest LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE '
              'PASSWORD %L', :'ingest_pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_ingest') \gexec
SELECT 'CREATE DATABASE lifebox OWNER lifebox_owner'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'lifebox') \gexec
SQL

# --- broker reconciler (issue 13) ---
# `lifebox broker-sync`'s role when LIFEBOX_BROKER_SYNC_PASSWORD is set (compose sets it): no
# BYPASSRLS; migration 0050 lets it SELECT two columns of the broker's credential view only.
if [ -n "${LIFEBOX_BROKER_SYNC_PASSWORD:-}" ]; then
  run_psql --dbname postgres <<'SQL'
\getenv sync_pw LIFEBOX_BROKER_SYNC_PASSWORD
SELECT format('CREATE ROLE lifebox_broker_sync LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB '
              'NOCREATEROLE PASSWORD %L', :'sync_pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_broker_sync') \gexec
GRANT CONNECT ON DATABASE lifebox TO lifebox_broker_sync;
SQL
fi

# --- commands (issue 14) ---
# `lifebox dispatch`'s role when LIFEBOX_DISPATCH_PASSWORD is set (compose sets it): no
# BYPASSRLS; migration 0060's runtime_grants rows give it the outbox and its commands only.
if [ -n "${LIFEBOX_DISPATCH_PASSWORD:-}" ]; then
  run_psql --dbname postgres <<'SQL'
\getenv dispatch_pw LIFEBOX_DISPATCH_PASSWORD
SELECT format('CREATE ROLE lifebox_dispatch LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB '
              'NOCREATEROLE PASSWORD %L', :'dispatch_pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_dispatch') \gexec
GRANT CONNECT ON DATABASE lifebox TO lifebox_dispatch;
SQL
fi

# --- backups (issue 19) ---
# `lifebox db backup`'s role when LIFEBOX_BACKUP_PASSWORD is set (compose sets it): it reads
# every tenant's rows (BYPASSRLS: row-level security is forced) through pg_read_all_data
# (every table, partition and chunk) and writes nothing. Only a superuser can make it.
if [ -n "${LIFEBOX_BACKUP_PASSWORD:-}" ]; then
  run_psql --dbname postgres <<'SQL'
\getenv backup_pw LIFEBOX_BACKUP_PASSWORD
SELECT format('CREATE ROLE lifebox_backup LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB '
              'NOCREATEROLE PASSWORD %L', :'backup_pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_backup') \gexec
GRANT CONNECT ON DATABASE lifebox TO lifebox_backup;
GRANT pg_read_all_data TO lifebox_backup;
SQL
fi

run_psql --dbname lifebox -v storage="$storage" <<'SQL'
REVOKE ALL ON DATABASE lifebox FROM PUBLIC;
GRANT CONNECT ON DATABASE lifebox TO lifebox_app, lifebox_ingest;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO lifebox_owner;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT :'storage' = 'timescaledb' AS has_tsdb
\gset
\if :has_tsdb
  -- TimescaleDB only where the server preloads it (the extension cannot work otherwise).
  CREATE EXTENSION IF NOT EXISTS timescaledb;
  -- The extension never reports to its vendor from our databases.
  ALTER SYSTEM SET timescaledb.telemetry_level = 'off';
  SELECT pg_reload_conf();
\else
  -- pg_partman's tables (part_config) and functions live in schema partman; the migrations
  -- (as lifebox_owner) register telemetry_events there and `lifebox maintain` runs its
  -- maintenance, so the owner owns the schema and may use everything in it.
  CREATE SCHEMA IF NOT EXISTS partman AUTHORIZATION lifebox_owner;
  CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
  GRANT ALL ON SCHEMA partman TO lifebox_owner;
  GRANT ALL ON ALL TABLES IN SCHEMA partman TO lifebox_owner;
  GRANT ALL ON ALL SEQUENCES IN SCHEMA partman TO lifebox_owner;
  GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA partman TO lifebox_owner;
  GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA partman TO lifebox_owner;
\endif
SQL
