# Corridor: `make run` (embedded mode) and `make test` (everything, on real servers).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.lock requirements-dev.lock pyproject.toml | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: install install-dev run demo test faults unit lint servers stop-servers compose-schema browser eval judge bench clean

# Runtime dependencies only: what `make run` needs on a fresh machine.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps --no-build-isolation -e . 2>/dev/null || $(PIP) --no-deps -e .
	rm -f $(VENV)/.installed-[0-9]*
	touch $(STAMP)

# Plus the test and tooling dependencies.
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(PIP) -r requirements-dev.lock
	rm -f $(VENV)/.installed-dev-*
	touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

## Corridor on embedded defaults: one process, in-process bus, SQLite store, http://127.0.0.1:8000
run: install
	$(BIN)/corridor run all

## The whole loop offline: a local sample feed, Corridor, a receiver that prints verified alerts
demo: install
	$(BIN)/corridor demo

## Start the real servers the tests need (idempotent): Kafka 3.9 (KRaft) and the Mongo-wire test server
## (SecantusDB's secantusd-rs; built once per machine with cargo, ~10 min, cached in ~/.cache/corridor)
servers: install
	deploy/kafka.sh start
	deploy/secantus.sh start

stop-servers:
	-deploy/kafka.sh stop
	-deploy/secantus.sh stop

compose-schema:
	deploy/compose-schema.sh

## Debian's Chromium for the dashboard test (needs root; CI runs it)
browser:
	deploy/chromium.sh

lint: install-dev
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench
	$(BIN)/mypy

## The whole suite: lint, types, then every test against the real servers
test: install-dev servers compose-schema lint
	$(BIN)/pytest

## The fault suite alone (three-broker cluster, two replicas of every role; ~10 min)
faults: install-dev servers
	$(BIN)/pytest tests/faults -p no:cacheprovider -s

unit: install-dev
	$(BIN)/pytest -m "not kafka and not mongo and not e2e and not faults"

## Score the classifier on the labelled data beside the repository (../shared/data)
eval: install-dev
	$(BIN)/corridor eval --bootstrap 1000 tests/data/news/pkkz_dev.jsonl tests/data/news/pkkz_test.jsonl ../shared/data/news/dev.jsonl \
		../shared/data/reuters/train.jsonl

## Rebuild the judge (the classifier's learned second opinion) from the labelled data: ~2 min
judge: install-dev
	$(BIN)/corridor judge train tests/data/news/pkkz_dev.jsonl ../shared/data/news/dev.jsonl \
		../shared/data/reuters/train.jsonl --out services/classifier/judge.json

## Benchmarks: each prints its figures and a ratio against a baseline measured in the same run (~45 min)
bench: install-dev servers
	$(BIN)/python bench/bench_classifier.py
	$(BIN)/python bench/bench_ingest.py mongo
	$(BIN)/python bench/bench_alerts.py mongo
	$(BIN)/python bench/bench_query.py sqlite 100000
	$(BIN)/python bench/bench_query.py sqlite 1000000   # ~15 min: loads a million events
	$(BIN)/python bench/bench_query.py mongo 100000     # ~20 min: the test server loads ~220 events/s
	deploy/kafka-cluster.sh start
	$(BIN)/python bench/bench_cluster.py                # ~6 min: scaling on 3 brokers; dead-endpoint p99
	deploy/kafka-cluster.sh stop

clean: stop-servers
	-deploy/kafka-cluster.sh stop
	rm -rf var deploy/.run .pytest_cache .mypy_cache .ruff_cache test-artifacts
