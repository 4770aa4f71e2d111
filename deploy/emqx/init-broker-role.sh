#!/bin/bash
# The clustered broker's own database role (issue 13), for EMQX's PostgreSQL authentication
# and authorization (lifebox-auth.hocon). Run once as a superuser, after `lifebox migrate`:
#   LIFEBOX_BROKER_PASSWORD=… PGHOST=db PGUSER=postgres bash deploy/emqx/init-broker-role.sh
# lifebox_broker logs in, may connect to the lifebox database, and may call one function,
# lifebox_broker_device(username) (migration 0046): the live credential of one username. It
# holds nothing else (no table, no view, no BYPASSRLS). Safe to re-run: the password is reset.
# The password is read from the environment by psql itself (\getenv), never put on a command
# line, where any local user could read it in the process list.
set -euo pipefail
: "${LIFEBOX_BROKER_PASSWORD:?}"
superuser=${POSTGRES_USER:-${PGUSER:-postgres}}
database=${LIFEBOX_DATABASE:-lifebox}

psql -v ON_ERROR_STOP=1 --username "$superuser" --dbname "$database" \
    -v database="$database" <<'SQL'
\getenv broker_pw LIFEBOX_BROKER_PASSWORD
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_broker') AS create_role
\gset
\if :create_role
  CREATE ROLE lifebox_broker LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT
      PASSWORD :'broker_pw';
\else
  ALTER ROLE lifebox_broker LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT
      PASSWORD :'broker_pw';
\endif
GRANT CONNECT ON DATABASE :"database" TO lifebox_broker;
SELECT lifebox_grant_broker();
SQL
