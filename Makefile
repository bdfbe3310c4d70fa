# AECL: two commands matter. `make run` serves the demo configuration;
# `make test` installs everything and runs every check.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
AECL := $(VENV)/bin/aecl
BUF := .cache/node/node_modules/.bin/buf
CONFIG ?= examples/aecl.yaml
KEYS := var/keys

.PHONY: help setup setup-dev run keys test check lint-proto gen gen-check policy-wasm rego-check check-readme pytest bench demo clean

help:
	@echo "make run    - install what is needed and serve the demo config on 127.0.0.1:50051, beside the example world"
	@echo "make test   - install everything (venv, bubblewrap, buf, OPA) and run every check"
	@echo "make demo   - play the before/after story against a running 'make run'"
	@echo "make bench  - benchmarks against same-run baselines"
	@echo "make gen    - regenerate Python code from proto/ and the compiled policy from rego/"
	@echo "make check-readme - check the CLI help quoted in README.md against aecl --help"

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

# The signing key CONFIG names (audit.signing_key, resolved against the
# config's directory), printed for the shell; a bad config is one line, no traceback.
SIGNING_KEY_OF = $(PY) -c 'import os, sys, pathlib; sys.excepthook = lambda t, e, tb: (print(f"make: {e}", file=sys.stderr), os._exit(2)); from enforcer.config import load_config; print(load_config(pathlib.Path(sys.argv[1])).audit.signing_key)'

# Creates the audit key pair CONFIG names if it does not exist yet, then the
# token key and a first API key per principal (var/credentials/ for the demo).
keys: setup
	@key=$$($(SIGNING_KEY_OF) '$(CONFIG)') || exit 2; \
	if [ ! -f "$$key" ]; then \
	  [ "$$(basename "$$key")" = audit.key ] || { echo "make keys: $(CONFIG) names the signing key $$key; 'aecl keygen --out DIR' writes DIR/audit.key: point audit.signing_key at such a file, or create the key yourself" >&2; exit 2; }; \
	  $(AECL) keygen --out "$$(dirname "$$key")" || exit 2; \
	fi; \
	$(AECL) --log-level WARNING credentials demo --config '$(CONFIG)'

# make run [CONFIG=path/to/aecl.yaml] [LISTEN=host:port] [METRICS_LISTEN=host:port|off]
# The example world (examples/world) starts first, beside the service, and
# stops with it. The service prints what it serves (addresses as bound, audit
# log, engine, policy).
run: setup keys
	@echo "try: $(if $(LISTEN),$(PY) examples/demo.py --target HOST:PORT (the address below),make demo) in another shell"
	@exec scripts/serve-with-world.sh --config '$(CONFIG)' $(if $(LISTEN),--listen '$(LISTEN)') $(if $(METRICS_LISTEN),--metrics-listen '$(METRICS_LISTEN)')

test: setup-dev check pytest

check: gen-check lint-proto rego-check check-readme

gen: setup-dev policy-wasm
	@scripts/gen-proto.sh

# The shipped policy compiled to WebAssembly (opa build -t wasm), committed so
# that `make run` needs no OPA: enforcer/policy/compiled/ (see README, "Two
# engines, one answer").
policy-wasm: setup-dev
	@$(PY) -m enforcer.policy.wasm_build --write

GENERATED := enforcer/_gen enforcer/policy/compiled

gen-check: gen
	@git diff --exit-code -- $(GENERATED) || { echo "generated code is stale: run 'make gen' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- $(GENERATED))" || { echo "untracked generated files in $(GENERATED)" >&2; exit 1; }

lint-proto: setup-dev
	@$(BUF) lint
	@$(BUF) breaking --against proto/baseline.image.json
	@echo "buf lint and buf breaking: ok"

rego-check: setup-dev
	@opa=$$(scripts/build-opa.sh | tail -n1); \
	$$opa fmt --list --fail rego/ >/dev/null || { echo "opa fmt: these files need 'opa fmt -w':" >&2; $$opa fmt --list rego/ >&2; exit 1; }; \
	$$opa check --strict --capabilities rego/capabilities.json rego/ && \
	$$opa test --ignore capabilities.json rego/ && \
	$$opa test --ignore capabilities.json rego/ --coverage | $(PY) scripts/rego-coverage.py --threshold 95 && \
	echo "opa fmt, check --strict, test: ok"

check-readme: setup
	@$(PY) scripts/check-readme.py

pytest: setup-dev
	@$(PY) -m pytest -q

bench: setup-dev
	@$(PY) bench/run.py

demo: setup
	@$(PY) examples/demo.py

clean:
	rm -rf var .pytest_cache
