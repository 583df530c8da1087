# VirtRigaud: `make test` and `make demo` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
# Ray 2.60 turns token auth on when ~/.ray/auth_token exists; the local dev cluster has none.
export RAY_AUTH_MODE := disabled

.PHONY: setup build lint test unit demo crds chart-readme proto image image-lock clean

setup:            ## apt packages, .venv, pip install -e .[test] (idempotent)
	@scripts/setup.sh

build: setup      ## the dev stack's Go programs (API server, vcsim) and etcd, cached by input hash
	@$(PY) -m virtrigaud.dev.gobuild

lint: setup
	$(VENV)/bin/ruff check virtrigaud tests scale-tests image
	$(VENV)/bin/ruff format --check virtrigaud tests scale-tests image
	$(VENV)/bin/mypy virtrigaud

test: build lint image  ## everything CI runs
	$(VENV)/bin/pytest -q

unit: setup       ## tests that need no dev stack (nor the built image)
	$(VENV)/bin/pytest -q -m "not stack and not image"

demo: build       ## dev stack + simulators + sharded controller + sample VMs converging
	$(VENV)/bin/virtrigaud demo

crds: setup       ## regenerate the checked-in CRDs and docs/field-support.md from the Python models
	$(VENV)/bin/virtrigaud crds --output-dir helm/virtrigaud/crds
	$(VENV)/bin/virtrigaud field-support --output docs/field-support.md

chart-readme: setup  ## regenerate helm/virtrigaud/README.md from the chart's schema and values (a test fails on drift)
	$(PY) scripts/chart_readme.py

proto: setup      ## regenerate the provider.v1 module from proto/ (a test fails on drift)
	$(PY) scripts/gen_proto.py

image:            ## the container image: build/image/virtrigaud-VERSION.oci.tar (root; no Docker needed)
	@image/build.sh

image-lock: setup ## re-pin image/*.lock from pyproject.toml + constraints.txt (a test fails on drift)
	$(PY) image/lock.py

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
