# obsflow: `make up` runs the system, `make test` runs the tests. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: up test venv services lint typecheck bench bench-events bench-ingest bench-plan clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

services:
	bash scripts/ensure-services.sh

up: venv services
	$(VENV)/bin/obsflow up

lint: venv
	$(VENV)/bin/ruff check shared services tests

typecheck: venv
	$(VENV)/bin/mypy

test: venv services lint
	$(VENV)/bin/pytest

bench: bench-events

bench-events: venv services
	$(PY) tests/benchmarks/events.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
