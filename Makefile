# westflow: `make demo` runs the main job on the local network, `make test` passes the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The network model is type-checked strictly (STYLE.md #11).
STRICT := westflow ray_cluster/reservations.py

.PHONY: setup demo test lint unit integration bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/westflow demo

lint: setup
	$(VENV)/bin/ruff check westflow westflow_cli hostprocs ray_cluster storage admission pipelines jobs tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --strict $(STRICT)
	$(VENV)/bin/mypy westflow_cli hostprocs ray_cluster storage admission pipelines jobs

# Pure logic on every core (no services: each worker is independent), then the integration tests one at a
# time, in their own order (tests/conftest.py), on the local networks they start.
test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 --tb=native -rfE -n logical tests/unit
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=0 --durations-min=5 --tb=native -rfE tests/integration

unit: setup
	$(VENV)/bin/pytest -q -m "not integration"

bench: setup
	$(PY) -m benchmarks.placement_bench

clean:
	rm -rf $(VENV) .westflow .pytest_cache .mypy_cache .ruff_cache
