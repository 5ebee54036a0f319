# make run: the service with its emulators at http://127.0.0.1:7071/v2 (Ctrl-C stops everything)
# make test: the whole test suite (starts its own emulators on free ports)
# make test-unit / test-integration / test-e2e: one tier (test-unit starts no emulator)
# Python 3.11 when installed under that name, else python3 (override: make PYTHON=/path/to/python3.11)
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv node_modules run test test-unit test-integration test-e2e lint token bench clean shellcheck shellcheck-installed checkov checkov-venv tools chromium-installed ohif-installed
ROLE ?= owner

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

venv: $(VENV)/.installed
node_modules: node_modules/.installed

run: $(VENV)/.installed node_modules/.installed
	$(PY) -m scripts.run

test: $(VENV)/.installed node_modules/.installed
	$(PY) -m pytest

# one tier at a time (the markers follow the folders, see tests/conftest.py); the unit tier needs no emulator
test-unit: $(VENV)/.installed
	$(PY) -m pytest -m unit tests/unit

test-integration: $(VENV)/.installed node_modules/.installed
	$(PY) -m pytest -m integration tests/integration

test-e2e: $(VENV)/.installed node_modules/.installed
	$(PY) -m pytest -m e2e tests/e2e

# a local-mode bearer token (make -s token ROLE=reader)
token: $(VENV)/.installed
	@$(PY) -m scripts.token --role $(ROLE)

# STOW/QIDO/WADO beside Orthanc (installed from Debian if missing) and the storage floor; not part of CI
bench: $(VENV)/.installed node_modules/.installed
	$(PY) -m bench $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dicomserver functions scripts tests bench function_app.py
	$(VENV)/bin/mypy dicomserver

clean:
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache

# shellcheck of the deployment scripts (tests/unit/test_deploy_script.py runs it too); shellcheck comes
# from Debian when missing (CI runs as root; elsewhere through sudo)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

shellcheck-installed:
	@command -v shellcheck >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq shellcheck; }

shellcheck: shellcheck-installed
	shellcheck -x infra/deploy.sh infra/hooks/*.sh

# checkov, the security scan of the Bicep templates (tests/unit/test_checkov.py), in a virtualenv of its
# own: its pinned dependencies clash with the app's. Bump CHECKOV_VERSION to upgrade (reinstalls).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .local/checkov-venv

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

checkov: checkov-venv
	$(CHECKOV_VENV)/bin/checkov -d infra --config-file infra/.checkov.yaml

# the unit tier runs the infra checks (Bicep types, shellcheck, deploy.sh --dry-run, checkov), so the test
# targets install their tools first
tools: checkov-venv shellcheck-installed

test test-unit: tools

# The OHIF viewer (scripts/ohif.py): the pinned prebuilt @ohif/app, fetched once with npm pack into
# .local/ohif/. make run serves it on :3000; the browser test (tests/e2e/test_browser.py) drives it in
# Debian's Chromium, installed when missing (CI runs as root; elsewhere through sudo).
ohif-installed: $(VENV)/.installed
	@$(PY) -m scripts.ohif install --quiet

chromium-installed:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: ohif-installed
test test-e2e: chromium-installed ohif-installed
