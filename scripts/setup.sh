#!/usr/bin/env bash
# Installs what this machine lacks to run and test LifeBox; safe to run again (fast no-op).
#   system packages (apt): PostgreSQL 15 server + pg_partman, mosquitto
#   .venv with the Python dependencies and the Rust extension (maturin, release build)
#   target/release/lifebox-loadgen (the Rust load generator behind `lifebox loadgen`)
#   node_modules with buf and the gRPC contract-test client
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postgresql-15 postgresql-15-partman mosquitto)
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing system packages: ${missing[*]}. Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  step "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts a cluster and a broker of its own on install; LifeBox never uses them.

for tool in cargo python3 npm; do
  command -v "$tool" >/dev/null || { echo "$tool is required (see README: Requirements)" >&2; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.lifebox-installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml Cargo.toml Cargo.lock ingest_native -newer "$stamp" -type f -print -quit)" ]; then
  step "pip install -e '.[dev]' (builds the Rust extension; first time takes a few minutes)"
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

loadgen=target/release/lifebox-loadgen
if [ ! -x "$loadgen" ] || [ -n "$(find loadgen Cargo.lock -newer "$loadgen" -type f -print -quit)" ]; then
  step "cargo build --release -p lifebox-loadgen (the load generator)"
  cargo build --release --locked -q -p lifebox-loadgen
fi

if [ ! -d node_modules/@bufbuild ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm ci (buf, @grpc/grpc-js)"
  npm ci --no-audit --no-fund --loglevel=error
fi
step "setup done"
