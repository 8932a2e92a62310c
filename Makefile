# wavesign: the two README commands (`make demo`, `make test`) set up everything they
# need on a fresh Debian machine: Debian packages, a virtualenv and the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps

# gnupg: operator/officer signatures; libzbar*: zbar-py (built against libzbar-dev);
# zbar-tools and qrencode: the independent QR reader and writer used by tests;
# postgresql: the throwaway cluster of the PostgreSQL tests; softhsm2: the PKCS#11
# token the HSM tests sign with.
DEBIAN_PACKAGES := gnupg libzbar0 libzbar-dev zbar-tools qrencode postgresql softhsm2

.PHONY: all demo test lint docs unit sysdeps venv clean offline-bundle

all: test

$(STAMPS)/sysdeps: scripts/ensure-debian-packages
	@mkdir -p $(STAMPS)
	scripts/ensure-debian-packages $(DEBIAN_PACKAGES)
	@touch $@

sysdeps: $(STAMPS)/sysdeps

$(STAMPS)/venv: pyproject.toml $(STAMPS)/sysdeps
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[online,offline,device,dev]'
	@touch $@

venv: $(STAMPS)/venv

demo: $(STAMPS)/venv
	$(BIN)/wavesign demo --out demo-out

lint: $(STAMPS)/venv
	$(BIN)/ruff check online offline shared tests bench scripts docs/conf.py
	$(BIN)/mypy online offline shared

docs: $(STAMPS)/venv
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

unit: $(STAMPS)/venv
	$(BIN)/python -m pytest

test: lint docs unit

# The wheelhouse the security officer carries to the air-gapped machine.
offline-bundle: $(STAMPS)/venv
	$(BIN)/python scripts/build_offline_bundle.py --out dist/offline-bundle

clean:
	rm -rf $(VENV) $(STAMPS) docs/_build build *.egg-info
