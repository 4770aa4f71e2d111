# syntax=docker/dockerfile:1
# LifeBox image: one wheel (Python + the Rust ingest core) on a slim runtime, as a non-root user.

FROM python:3.11-slim-bookworm AS build
# The Rust toolchain scripts/setup.sh installs on Debian 12: rustc-web/cargo-web from
# bookworm-security (1.96; bookworm's own are too old for the workspace's rust-version, which
# cargo enforces, so an old one fails the build instead of building something else).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates rustc-web cargo-web \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Every Python package at the version the tests ran with (maturin here, the wheel's
# dependencies in the final stage).
COPY constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt maturin
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY ingest_native ingest_native
COPY loadgen loadgen
# Every workspace member must be present for cargo to load the workspace.
COPY benchmarks/apiload benchmarks/apiload
COPY lifebox_grpc lifebox_grpc
COPY lifebox lifebox
RUN maturin build --release --locked --out /wheels \
 && cargo build --release --locked -p lifebox-loadgen

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --create-home --home-dir /app lifebox
COPY --from=build /wheels /wheels
COPY --from=build /src/constraints.txt /wheels/constraints.txt
COPY --from=build /src/target/release/lifebox-loadgen /usr/local/bin/lifebox-loadgen
RUN pip install --no-cache-dir -c /wheels/constraints.txt /wheels/*.whl && rm -rf /wheels
COPY migrations /app/migrations
# Metrics and health listen beyond the container (Prometheus on the compose network). gRPC
# does not by default: in prod a public gRPC address needs TLS, and every process checks that
# at start, so only serve's environment moves it (docker-compose.yml, with the certificate).
ENV LIFEBOX_MODE=prod \
    LIFEBOX_MIGRATIONS_DIR=/app/migrations \
    LIFEBOX_HOME=/app/data \
    LIFEBOX_HTTP_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER lifebox
WORKDIR /app
# gRPC, HTTP (health, metrics), and the metrics of ingest, broker-sync and dispatch.
EXPOSE 50051 8080 9108 9109 9110 9111
ENTRYPOINT ["lifebox"]
CMD ["serve"]
