# Set-up, demo and tests; every target creates .venv and installs the project when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup chromium demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null)

demo: setup
	$(VENV)/bin/deeperbench run sweeps/smoke.yaml --out runs/demo
	$(VENV)/bin/deeperbench report runs/demo            # writes runs/demo/_report.html

test: setup chromium
	$(PY) -m pytest -q

test-slow: setup chromium
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/harness_overhead.py

clean:
	rm -rf $(VENV) runs
