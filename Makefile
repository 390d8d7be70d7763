# Set-up, demo and tests; every target creates .venv and installs the project when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup chromium demo thesis gpu-check lint test test-slow bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the report's browser test (needs root; the test skips, saying so, without it).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null)

# The report is written even when a trial failed (it lists the failures); the exit status is run's.
demo: setup
	@status=0; $(VENV)/bin/deeperbench run sweeps/smoke.yaml --out runs/demo || status=$$?; \
	$(VENV)/bin/deeperbench report runs/demo && exit $$status      # writes runs/demo/_report.html

# Every thesis figure's check at the largest setting that fits a 2-core CPU (about 30 minutes).
thesis: setup
	@status=0; for spec in sweeps/thesis/*.yaml; do $(VENV)/bin/deeperbench run $$spec --out runs/thesis || status=1; done; \
	$(VENV)/bin/deeperbench report runs/thesis && exit $$status

# On a machine with an NVIDIA GPU: every workload's smoke on cuda in torch and JAX, then the report.
gpu-check: setup
	DEEPERBENCH=$(VENV)/bin/deeperbench tools/gpu-check.sh runs/gpu-check

# Lint, format and types (configured in pyproject.toml): what .ci/run checks before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/harness_overhead.py

clean:
	rm -rf $(VENV) runs
