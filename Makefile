# Two commands matter: `make demo` (set up and run the main job) and
# `make test` (set up and pass the tests). Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA := deploy/local/kafka.sh
PYTEST_ARGS ?=

.PHONY: install test lint format kafka-up kafka-down kafka-status clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,test,dev]"
	touch $(STAMP)

## install: create .venv with the worker, trainer, test and dev dependencies
install: $(STAMP)

## test: everything from a fresh clone (venv, broker jars), then the whole suite
test: $(STAMP)
	$(KAFKA) fetch
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

## lint: ruff check and format check
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## kafka-up / kafka-down: the local single-node broker on 127.0.0.1:$${KAFKA_PORT:-9092}
kafka-up:
	$(KAFKA) up

kafka-down:
	$(KAFKA) down

kafka-status:
	$(KAFKA) status

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
