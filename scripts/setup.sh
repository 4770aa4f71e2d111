#!/usr/bin/env bash
# Installs what this machine lacks to run and test LifeBox; safe to run again (fast no-op).
# It checks every prerequisite first and, for each one missing, prints the one line that fixes
# it; as root it installs the apt ones itself (README: "Two commands" lists them for Debian 12):
#   system packages (apt): PostgreSQL 15 server + pg_partman, mosquitto and its clients,
#     python3 with venv (and python3-dev: cargo test links libpython),
#     a C toolchain, git, node/npm, and a Rust toolchain >= the workspace's rust-version
#     (Debian's rustc-web/cargo-web 1.96 from bookworm-security; a rustup toolchain is kept)
#   .venv with the Python dependencies at the versions in constraints.txt (the generated code
#     and the linters depend on them) and the Rust extension (maturin, release build)
#   target/release/lifebox-loadgen (the Rust load generator behind `lifebox loadgen`)
#   node_modules with buf and the gRPC contract-test client (package-lock.json)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# version_ge A B: A >= B, dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

RUST_MIN=$(sed -n 's/^rust-version = "\([0-9.]*\)".*/\1/p' Cargo.toml)
RUST_APT=(rustc-web cargo-web rust-web-clippy rustfmt-web)
SECURITY_LINE="echo 'deb http://deb.debian.org/debian-security bookworm-security main' | sudo tee /etc/apt/sources.list.d/debian-security.list && sudo apt-get update"

apt_missing=() # what apt installs (as root, below)
problems=()    # "what is wrong|the one line that fixes it", for what apt alone cannot fix
need_apt() {
  local pkg
  for pkg in "$@"; do
    [[ " ${apt_missing[*]-} " == *" $pkg "* ]] || apt_missing+=("$pkg")
  done
}

for pkg in postgresql-15 postgresql-15-partman mosquitto mosquitto-clients; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt "$pkg"
done
if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  need_apt python3 python3-venv
else
  python3 -c 'import ensurepip, venv' 2>/dev/null \
    || need_apt python3-venv # Debian ships ensurepip separately; `python3 -m venv` needs it
  # `cargo test` links the extension's tests against libpython (pyo3 without
  # extension-module): Debian has the linker's libpython3.X.so in python3-dev only.
  python3 - 2>/dev/null <<'PY' || need_apt python3-dev
import os, sys, sysconfig
library = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY"))
sys.exit(0 if os.path.exists(library) else 1)
PY
fi
# cargo (libcurl) and git check servers' certificates against the system's store.
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_apt ca-certificates
command -v cc >/dev/null || need_apt build-essential
command -v make >/dev/null || need_apt make
command -v git >/dev/null || need_apt git # `make lint` compares protos with git history
command -v node >/dev/null || need_apt nodejs
command -v npm >/dev/null || need_apt npm

# Rust: the workspace's rust-version (Cargo.toml) or newer, with rustfmt and clippy (`make
# lint`). A rustup toolchain is used when present (Debian's rust*-web packages conflict with
# rustup); otherwise Debian 12's rustc-web/cargo-web (1.96 in bookworm-security; bookworm's own
# cargo is 1.63 and its rustc-web 1.85, both too old).
# (No pipeline on a missing command: under pipefail its 127 would end the script unexplained.)
cargo_version() {
  local out
  out=$(cargo --version 2>/dev/null) || return 0
  out=${out#cargo }
  echo "${out%% *}" | sed 's/-.*//'
}
if command -v rustup >/dev/null; then
  have=$(cargo_version)
  if [ -z "$have" ] || ! version_ge "$have" "$RUST_MIN"; then
    problems+=("Rust ${have:-none} (rustup) is older than the workspace's $RUST_MIN|rustup update stable")
  fi
  installed=$(rustup component list --installed 2>/dev/null || true)
  for component in rustfmt clippy; do
    if ! grep -q "^$component" <<<"$installed"; then
      problems+=("rustup toolchain lacks $component|rustup component add $component")
    fi
  done
else
  have=$(cargo_version)
  if [ -z "$have" ] || ! version_ge "$have" "$RUST_MIN" || ! cargo fmt --version >/dev/null 2>&1 \
    || ! cargo clippy --version >/dev/null 2>&1; then
    # A bare system may have no package lists yet: as root, read them before judging.
    [ "$(id -u)" -eq 0 ] && apt-get update -qq
    policy=$(apt-cache policy rustc-web 2>/dev/null || true)
    candidate=$(awk '/Candidate:/ {print $2}' <<<"$policy" | sed 's/+.*//')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ] || ! version_ge "$candidate" "$RUST_MIN"; then
      problems+=("Rust >= $RUST_MIN is needed (have ${have:-none}); apt offers rustc-web ${candidate:-none}: enable bookworm-security|$SECURITY_LINE")
    fi
    need_apt "${RUST_APT[@]}"
  fi
fi

if ((${#problems[@]})); then
  for problem in "${problems[@]}"; do
    printf '%s. Fix it with:\n  %s\n' "${problem%%|*}" "${problem#*|}" >&2
  done
  ((${#apt_missing[@]})) && printf 'Then install: sudo apt-get install -y %s\n' "${apt_missing[*]}" >&2
  exit 1
fi
if ((${#apt_missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing system packages: ${apt_missing[*]}. Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${apt_missing[*]}" >&2
    exit 1
  fi
  step "apt-get install ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
# Debian starts a cluster and a broker of its own on install; LifeBox never uses them.

# constraints.txt pins every Python package (build backend included: PIP_CONSTRAINT reaches
# pip's isolated build environment too): grpcio-tools and protobuf must match the committed
# lifebox/v1 code (`make gen-check`), and ruff/mypy decide what `make lint` accepts.
export PIP_CONSTRAINT="$PWD/constraints.txt"
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.lifebox-installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml constraints.txt Cargo.toml Cargo.lock ingest_native -newer "$stamp" -type f -print -quit)" ]; then
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
