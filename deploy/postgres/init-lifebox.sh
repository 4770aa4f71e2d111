#!/bin/bash
# First-boot init for the TimescaleDB container: the LifeBox database, its three roles and the
# extensions that only a superuser may create. Migrations then run as lifebox_owner.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$LIFEBOX_OWNER_PASSWORD" -v app_pw="$LIFEBOX_APP_PASSWORD" \
  -v ingest_pw="$LIFEBOX_INGEST_PASSWORD" <<'SQL'
CREATE ROLE lifebox_owner LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE PASSWORD :'owner_pw';
CREATE ROLE lifebox_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
CREATE ROLE lifebox_ingest LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB PASSWORD :'ingest_pw';
CREATE DATABASE lifebox OWNER lifebox_owner;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname lifebox <<'SQL'
REVOKE ALL ON DATABASE lifebox FROM PUBLIC;
GRANT CONNECT ON DATABASE lifebox TO lifebox_app, lifebox_ingest;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO lifebox_owner;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
