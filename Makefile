# hookstream: every target sets up what it needs (the venv, Kafka's jars, the corpus).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HOOKSTREAM_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: run test test-unit lint browser bench bench-ingress bench-triggers bench-insights bench-insights-page bench-identity bench-checks bench-restart kafka-up kafka-down kafka-jars test-data venv clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

kafka-jars: $(STAMP)
	$(BIN)/python -c "from deploy.broker import LocalBroker; from schemas.settings import Settings; print(LocalBroker(Settings()).resolve_jars())"

test-data: $(STAMP)
	$(BIN)/python -m deploy.corpus
	$(BIN)/python -m tests.fake_github.openapi

run: $(STAMP) kafka-jars
	$(BIN)/hookstream dev

kafka-up: $(STAMP)
	$(BIN)/hookstream kafka up

kafka-down: $(STAMP)
	$(BIN)/hookstream kafka down

test: $(STAMP) kafka-jars test-data browser
	$(BIN)/pytest

# Pure logic only: no broker, no network, no corpus download; a few seconds.
test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Debian's Chromium for the insights page's browser tests. Where apt-get is not allowed
# (no root, no network), the browser tests are skipped and pytest shows why.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: the browser tests will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: bench-ingress bench-triggers bench-insights bench-insights-page bench-identity bench-checks bench-restart

bench-ingress: $(STAMP) kafka-jars test-data
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m tests.bench.ingress

bench-triggers: $(STAMP) kafka-jars test-data
	$(BIN)/python -m tests.bench.triggers

bench-insights: $(STAMP) kafka-jars test-data
	$(BIN)/python -m tests.bench.insights

bench-insights-page: $(STAMP) kafka-jars test-data
	$(BIN)/python -m tests.bench.insights_page

bench-identity: $(STAMP) kafka-jars test-data
	$(BIN)/python -m tests.bench.identity

bench-checks: $(STAMP) kafka-jars test-data
	$(BIN)/python -m tests.bench.checks

bench-restart: $(STAMP) kafka-jars test-data
	$(BIN)/python -m tests.bench.restart

clean:
	rm -rf $(VENV) .cache .hookstream .mypy_cache .ruff_cache .pytest_cache *.egg-info
