# Set-up and the two entry points: `make demo` and `make test` (`make docs`: the docs site). Both are idempotent:
# the virtual environment is created and the package installed only when missing or
# when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Decoded-image caches stay inside the project (never in the read-only data folder).
export SIMSIAM_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: install demo test test-fast docs lint clean gpu-prep gpu-dryrun

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,docs]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/simsiam demo --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The docs site (mkdocs.yml), offline, into the ignored site/; the reference pages are
# generated from the schema and the parser (docs/gen_reference.py). Also built by make test.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict -d site

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
