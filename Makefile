# Two commands on a fresh machine (Python 3.11+ with venv and pip):
#   make example   set up .venv and run the example experiment into ./my_runs
#   make test      set up .venv and run lint, type checks and every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline machines: Prefect's telemetry would only log connection errors.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup example test lint serve lock chromium

setup: $(VENV)/.installed

$(VENV)/.installed: requirements/dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps incense==0.0.15  # a test peer; see pyproject's dev extra
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

example: setup
	$(BIN)/python deployments/train.py with epochs=5 -F my_runs

# Style, formatting, types, and the package's layers (pyproject's [tool.importlinter]).
lint: setup
	$(BIN)/ruff check prefect_sacred tests benchmarks deployments
	$(BIN)/ruff format --check prefect_sacred tests benchmarks deployments
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint $(if $(CI),chromium)
	$(BIN)/python -m pytest

# The Prefect UI's browser test renders pages with Debian's Chromium; under CI it must not skip.
chromium:
	@command -v chromium >/dev/null || apt-get install -y chromium

serve: setup
	cd deployments && PREFECT_SACRED_OBSERVERS="$${PREFECT_SACRED_OBSERVERS:-file://$(CURDIR)/my_runs}" ../$(BIN)/python serve.py

# Regenerate the lock files after changing dependencies in pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements/dev.lock
	uv pip compile pyproject.toml --python-version 3.11 -o requirements/core.lock
