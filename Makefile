# obsflow: `make up` runs the system, `make test` runs the tests. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: up test venv services lint typecheck bench bench-events bench-ingest bench-plan bench-copy bench-replication chaos clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	bash scripts/ensure-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

services:
	bash scripts/ensure-services.sh

# Your site configuration (OBSFLOW_CONFIG_FILE) if set, else the example site of README.md (scripts/up.sh).
up: venv services
	VENV=$(abspath $(VENV)) bash scripts/up.sh

lint: venv
	$(VENV)/bin/ruff check shared services tests

typecheck: venv
	$(VENV)/bin/mypy

test: venv services lint typecheck
	$(VENV)/bin/pytest

bench: bench-events bench-ingest bench-plan bench-replication

bench-events: venv services
	$(PY) -m tests.benchmarks.events $(ARGS)

bench-ingest: venv services
	$(PY) -m tests.benchmarks.ingest $(ARGS)

bench-plan: venv
	$(PY) -m tests.benchmarks.plan $(ARGS)

bench-replication: venv services
	$(PY) -m tests.benchmarks.replication $(ARGS)

bench-copy: venv
	$(PY) -m tests.benchmarks.disk_copy $(ARGS)

# Faults (SIGKILLed services, RabbitMQ and PostgreSQL restarts, garbage) during an ingest, then the invariants as one
# JSON line (docs/chaos.md). ARGS: --duration S --files N --seed K.
chaos: venv services
	$(PY) -m tests.chaos $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
