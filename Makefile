# Set-up and the two entry points: `make demo` and `make test`. Both are idempotent:
# the virtual environment is created and the package installed only when missing or
# when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Decoded-image caches stay inside the project (never in the read-only data folder).
export SIMSIAM_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: install demo test test-fast lint clean gpu-prep gpu-dryrun

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/simsiam demo --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	PYTHONPATH=src $(VENV)/bin/lint-imports --no-cache

# A lent GPU machine (benchmarks/gpu_check.sh): gpu-prep writes what travels there into the
# ignored .whl/ and .gpu/; gpu-dryrun runs the check here on the CPU in a fresh venv that
# installs .whl/ offline, as that machine will.
gpu-prep: $(STAMP)
	$(PY) benchmarks/gpu_prep.py

gpu-dryrun: gpu-prep
	bash benchmarks/gpu_dryrun.sh

clean:
	rm -rf runs .cache .pytest_cache
