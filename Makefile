# Targets match the README. `make run` and `make test` each do all their own set-up.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install services migrate topology run run-check test test-fast lint bench clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

services:
	bash scripts/services.sh

migrate: install services
	$(PY) -m amsctl db migrate

topology: install services
	$(PY) -m amsctl topology apply

## Run the whole system (migrations, topology, then every Procfile process under honcho).
run: install
	bash scripts/run.sh

## Check that every Procfile process can start (its `python -m` module exists).
run-check: install
	bash scripts/run.sh --check

## The whole test suite, failing fast: lint, the unit tier (no service needed, seconds),
## then the integration and e2e tiers against the local services (isolated databases, vhost).
test: install
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-fast
	$(MAKE) --no-print-directory services
	$(PY) -m pytest -m "not unit"

## The unit tier: business rules and runtime parts on fakes; every service address points
## at a closed port (tests/unit/conftest.py).
test-fast: install
	$(PY) -m pytest tests/unit -m unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install services
	$(PY) bench/relay.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
