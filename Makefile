# AECL: two commands matter. `make run` serves the demo configuration;
# `make test` installs everything and runs every check.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
AECL := $(VENV)/bin/aecl
BUF := .cache/node/node_modules/.bin/buf
CONFIG ?= examples/aecl.yaml
KEYS := var/keys

.PHONY: help setup setup-dev run keys test check lint-proto gen gen-check rego-check check-readme pytest bench demo clean

help:
	@echo "make run    - install what is needed and serve the demo config on 127.0.0.1:50051"
	@echo "make test   - install everything (venv, bubblewrap, buf, OPA) and run every check"
	@echo "make demo   - play the before/after story against a running 'make run'"
	@echo "make bench  - benchmarks against same-run baselines"
	@echo "make gen    - regenerate Python code from proto/"
	@echo "make check-readme - check the CLI help quoted in README.md against aecl --help"

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

keys: setup
	@[ -f $(KEYS)/audit.key ] || $(AECL) keygen --out $(KEYS)

run: setup keys
	@echo "AECL on 127.0.0.1:50051 (embedded engine, config $(CONFIG), audit log var/audit.jsonl)"
	@echo "  try:   make demo          (in another shell)"
	@echo "  check: $(AECL) verify --log var/audit.jsonl --pubkey $(KEYS)/audit.pub"
	@exec $(AECL) serve --config $(CONFIG)

test: setup-dev check pytest

check: gen-check lint-proto rego-check check-readme

gen: setup-dev
	@scripts/gen-proto.sh

gen-check: gen
	@git diff --exit-code -- enforcer/_gen || { echo "generated code is stale: run 'make gen' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- enforcer/_gen)" || { echo "untracked generated files in enforcer/_gen" >&2; exit 1; }

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
