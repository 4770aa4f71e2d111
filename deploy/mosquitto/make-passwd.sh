#!/bin/sh
# One-shot, before the broker starts: hashes the service accounts' passwords from the compose
# environment into service.passwd (what `lifebox broker-sync` merges with the devices'
# credentials, so it never sees these passwords), and writes the broker's start-up password
# and ACL files (service accounts only, no device: broker-sync adds the live ones from the
# database within seconds and keeps both files right from then on). The healthcheck account
# gets a random password made here; it may read one $SYS topic. lifebox-broker-admin (broker-sync's
# account for taking over revoked certificates' sessions) may publish and read nothing. No anonymous account exists.
# lifebox-dispatch (`lifebox dispatch`) may publish commands only; lifebox-serve has no topic rights.
# Passwords never go on a command line (any local user can read argv): printf is a shell
# builtin, and mosquitto_passwd -U hashes the file in place.
set -eu
umask 077
auth=${AUTH_DIR:-/mosquitto/auth}
acl_source=${ACL_SOURCE:-/acl}
health=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
service=$auth/service.passwd
printf 'lifebox-ingest:%s\nlifebox-serve:%s\nlifebox-health:%s\nlifebox-broker-admin:%s\n' \
  "$MQTT_INGEST_PASSWORD" "$MQTT_SERVE_PASSWORD" "$health" "$MQTT_BROKER_ADMIN_PASSWORD" \
  > "$service"
# --- commands (issue 14): `lifebox dispatch` publishes commands (lifebox/v1/+/commands/+).
printf 'lifebox-dispatch:%s\n' "$MQTT_DISPATCH_PASSWORD" >> "$service"
mosquitto_passwd -U "$service"
cp "$service" "$auth/passwd"
if [ -f "$acl_source" ]; then
  cp "$acl_source" "$auth/acl"
fi
mkdir -p "$auth/health"
printf -- '-u lifebox-health\n-P %s\n' "$health" > "$auth/health/mosquitto_sub"
chown -R mosquitto:mosquitto "$auth" 2>/dev/null || true
# The broker writes its pid file in the run volume (broker-sync reads it): it must own it.
run=${RUN_DIR:-/mosquitto/run}
if [ -d "$run" ]; then
  chown mosquitto:mosquitto "$run" 2>/dev/null || true
fi
