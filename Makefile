# The two set-up commands are `make demo` and `make test`; both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint venv services-down clean

$(BIN)/.installed: pyproject.toml
	@echo "==> creating the virtualenv $(VENV) and installing paystream with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	@echo "==> paystream demo: services, two workers, accounts, 5,000 transfers, ledger check"
	$(BIN)/paystream demo

lint: venv
	@echo "==> ruff (lint + format check) and mypy --strict"
	$(BIN)/ruff check paystream tests bench
	$(BIN)/ruff format --check paystream tests bench
	$(BIN)/mypy

test: lint
	@echo "==> pytest: unit, property, integration and end-to-end tests on real Kafka, Postgres, ClickHouse"
	$(BIN)/python -m pytest

services-down: venv
	$(BIN)/paystream services down

clean: services-down
	rm -rf .data
