# meshsim: `make run` installs and runs the flagship scenario; `make test` installs
# and runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# CI runs a bounded, rotating sample of the slow statistical and soak tests.
SLOW_SAMPLE ?= 3

.PHONY: install run test lint typecheck bench validate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The flagship: Bookinfo under every mesh, then its comparison report. Exit status 1
# from `meshsim run` means an SLO of the scenario was breached (shown in the
# summary), which is a result, not a failure.
run: $(STAMP)
	$(BIN)/meshsim run scenarios/bookinfo.yaml --out runs/bookinfo; \
	status=$$?; [ $$status -le 1 ]
	$(BIN)/meshsim report runs/bookinfo --out runs/bookinfo/report.html

# Two passes: the bulk in parallel, then the tests that time real sockets against
# the wall clock (marked timing) and a sample of the slow ones, alone on the machine.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not timing"
	$(BIN)/python -m pytest -m "slow or timing" --slow-sample $(SLOW_SAMPLE)

lint: $(STAMP)
	$(BIN)/ruff check meshsim cli tests benchmarks
	$(BIN)/mypy

# Calibrate the cost model against the in-process proxy on this machine, then
# compare predictions with held-out measurements (reports/validation/).
validate: $(STAMP)
	$(BIN)/python -m meshsim.calibrate.report --calibrate --out reports/validation

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
