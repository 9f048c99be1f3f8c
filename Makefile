# The two set-up commands are `make demo` and `make test`; both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint venv bench browser kcat services-down clean

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

# The ops page's tests drive a real headless Chromium (Selenium); browser builds are not
# downloaded at run time: Debian's chromium and chromium-driver (and a font for the page's
# text in screenshots), installed only when missing.
BROWSER_PACKAGES := chromium chromium-driver fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; else \
	  echo "==> installing $(BROWSER_PACKAGES) from Debian (the ops page's browser tests)"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    $(BROWSER_PACKAGES); \
	fi

# The partner tests read a partner's topic with Debian's kcat, as a partner would.
kcat:
	@if command -v kcat >/dev/null; then :; else \
	  echo "==> installing kcat from Debian (the partner topic tests)"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kcat; \
	fi

test: lint browser kcat
	@echo "==> pytest: unit, property, integration and end-to-end tests on real Kafka, Postgres, ClickHouse"
	$(BIN)/python -m pytest

# The benchmarks of issue 18, < 15 minutes on the 2-core development machine: bench/harness.py
# runs each scenario in turn (bench/results/<name>.json), then bench/report.py regenerates
# the generated section of docs/benchmarks.md and its plots (docs/img/bench-*.png). One
# part alone: `$(BIN)/python -m bench.harness --only saga` or `--report-only`.
$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	@echo "==> installing the bench extras (matplotlib, numpy, tqdm; faust-streaming for its baseline)"
	$(BIN)/pip install --quiet -e '.[dev,bench,bench-faust]'
	touch $@

bench: venv $(BIN)/.bench-installed
	@echo "==> benchmarks: saga, latency, growth and the baselines, then docs/benchmarks.md"
	$(BIN)/python -m bench.harness

services-down: venv
	$(BIN)/paystream services down

clean: services-down
	rm -rf .data
