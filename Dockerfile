# syntax=docker/dockerfile:1
# LifeBox image: one wheel (Python + the Rust ingest core) on a slim runtime, as a non-root user.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
RUN pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
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
COPY --from=build /src/target/release/lifebox-loadgen /usr/local/bin/lifebox-loadgen
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY migrations /app/migrations
ENV LIFEBOX_MODE=prod \
    LIFEBOX_MIGRATIONS_DIR=/app/migrations \
    LIFEBOX_HOME=/app/data \
    LIFEBOX_GRPC_HOST=0.0.0.0 \
    LIFEBOX_HTTP_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER lifebox
WORKDIR /app
EXPOSE 50051 8080 9108 9109
ENTRYPOINT ["lifebox"]
CMD ["serve"]
