# Targets match the README. `make run` and `make test` each do all their own set-up.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OCR_STAMP := $(VENV)/.installed-ocr
LOCKS := requirements/runtime.txt requirements/dev.txt requirements/ocr.txt requirements/torch.txt

.PHONY: install install-ocr lock services migrate topology run run-check test test-fast test-ocr \
	test-cluster lint bench clean

$(STAMP): pyproject.toml $(LOCKS) scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

## Runtime + dev tools from the lock files: CPU only, no PyTorch.
install: $(STAMP)

## Also the easyocr engine: PyTorch's CPU build (TORCH_VARIANT=cuda for PyPI's CUDA build).
$(OCR_STAMP): $(STAMP)
	bash scripts/install.sh --ocr
	touch $(OCR_STAMP)

install-ocr: $(OCR_STAMP)

## Regenerate requirements/*.txt from pyproject.toml (after adding or changing a dependency).
lock:
	bash scripts/lock.sh

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
## then the integration and e2e tiers against the local services (isolated databases, vhost)
## and the short cluster run (tests/cluster: three fault scenarios, about three minutes, root).
## The easyocr engine's tests need PyTorch: `make test-ocr` runs those.
test: install
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-fast
	$(MAKE) --no-print-directory services
	$(PY) -m pytest -m "not unit and not easyocr"

test-ocr: install-ocr services
	$(PY) -m pytest -m easyocr

## The unit tier: business rules and runtime parts on fakes; every service address points
## at a closed port (tests/unit/conftest.py).
test-fast: install
	$(PY) -m pytest tests/unit -m unit

## The system as deployed (docker-compose.yml's commands and environment, one network
## namespace per process, a private PostgreSQL and Redis, three RabbitMQ nodes) under every
## fault scenario; one JSON line per scenario. Needs root. About 15 minutes on two cores.
test-cluster: install
	$(PY) -m tests.cluster

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install services
	$(PY) bench/relay.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
