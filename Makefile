# LifeBox tasks. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
FUZZ_SECONDS ?= 60

.PHONY: help setup run test lint fmt gen gen-check cargo-test pytest bench fuzz clean fresh-check

help: ## list the tasks
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: ## install what is missing: apt packages, .venv (with the Rust build), node tooling
	@bash scripts/setup.sh

run: setup ## set up, then run the whole platform locally (lifebox dev)
	$(BIN)/lifebox dev

test: setup lint cargo-test pytest ## lint, cargo test and pytest (what CI runs)

lint: setup ## ruff, mypy --strict, cargo fmt/clippy, buf lint and breaking, generated code up to date
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd protos && ../$(BUF) lint
	bash scripts/buf_breaking.sh
	$(MAKE) --no-print-directory gen-check

fmt: setup ## format Python and Rust
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cargo fmt --all

gen: setup ## regenerate lifebox/v1 from protos/
	bash scripts/gen_protos.sh

gen-check: ## fail if lifebox/v1 is stale
	@tmp=$$(mktemp -d) && bash scripts/gen_protos.sh $$tmp >/dev/null && \
	  diff -r -x __pycache__ $$tmp/lifebox lifebox && rm -rf $$tmp && echo "generated code is up to date"

cargo-test: ## Rust unit tests
	cargo test --workspace

pytest: setup ## Python tests against a real PostgreSQL and mosquitto started by fixtures
	$(BIN)/pytest

bench: setup ## run the benchmarks (prints tables; nothing asserts)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

fuzz: ## fuzz the native decoder for FUZZ_SECONDS (needs the nightly toolchain; installs cargo-fuzz)
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	mkdir -p fuzz/corpus/decode_batch && cd fuzz && cargo +nightly fuzz run decode_batch corpus/decode_batch seeds -- -max_total_time=$(FUZZ_SECONDS)

fresh-check: ## (slow, root) a bare Debian 12 in a chroot goes from nothing to make run and make test
	bash scripts/fresh_check.sh

clean: ## remove build outputs (not .lifebox data)
	rm -rf target $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
