# meshsim: `make run` installs and runs the flagship scenario; `make test` installs
# and runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make test` runs a bounded, rotating sample of the slow soak tests and of the closed-form
# statistical tests (each takes tens of seconds to minutes), never the lab's slow ones (the
# compiled proxies' calibrations, which CI runs after it); `make test-all` runs every one.
SLOW_SAMPLE ?= 3
STATISTICAL_SAMPLE ?= 3
UNIT := not slow and not timing and not statistical and not integration and not long

.PHONY: install run test test-all check lint format bench validate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The flagship: Bookinfo under every mesh, then its comparison report. Exit status 1
# from `meshsim run` means an SLO of the scenario was breached (shown in the
# summary), which is a result, not a failure. MODEL_SAMPLES cost-model parameter sets
# give every number a model band (0: central values only, the fastest).
MODEL_SAMPLES ?= 4
run: $(STAMP)
	$(BIN)/meshsim run scenarios/bookinfo.yaml --out runs/bookinfo \
		--model-samples $(MODEL_SAMPLES); \
	status=$$?; [ $$status -le 1 ]
	$(BIN)/meshsim report runs/bookinfo --out runs/bookinfo/report.html

# The bulk in parallel, with the day's samples of the slow and statistical tests (most are
# deterministic simulations, which load does not disturb); then the tests that time real
# sockets against the wall clock (marked timing), alone on the machine. The calibration
# lab's end-to-end runs (marked lab: minutes of their loads' wall clock on less than a core
# each, one after another) run beside the bulk in a process of their own, their output
# shown after. One date picks the day's samples for every pass and every xdist worker,
# also when a run crosses midnight.
SAMPLES = --slow-sample $(SLOW_SAMPLE) --statistical-sample $(STATISTICAL_SAMPLE)
ifndef MESHSIM_SAMPLE_DATE
MESHSIM_SAMPLE_DATE := $(shell date +%F)
endif
export MESHSIM_SAMPLE_DATE
test: $(STAMP)
	@lablog=$$(mktemp); labtmp=$$(mktemp -d); \
	$(BIN)/python -m pytest -q -m "lab and not timing" $(SAMPLES) \
		--basetemp "$$labtmp" > "$$lablog" 2>&1 & lab=$$!; \
	trap 'kill $$lab 2>/dev/null' INT TERM; \
	$(BIN)/python -m pytest -n 2 -m "not timing and not lab" $(SAMPLES); \
	bulk=$$?; wait $$lab; status=$$?; echo "--- the lab's run (pytest -m lab):"; \
	cat "$$lablog"; rm -rf "$$lablog" "$$labtmp"; [ $$bulk -eq 0 ] && [ $$status -eq 0 ]
	$(BIN)/python -m pytest -m timing $(SAMPLES)

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not timing and not lab"
	$(BIN)/python -m pytest -m "timing or lab"

# The inner loop: lint, then the unit tier (no sockets, subprocesses, notebooks or
# statistical runs, and none of the tests of several seconds each, marked long, which
# would take two thirds of its time) in parallel.
check: $(STAMP)
	$(BIN)/ruff check meshsim cli tests benchmarks
	$(BIN)/python -m pytest -n 2 -q -m "$(UNIT)"

lint: $(STAMP)
	$(BIN)/ruff check meshsim cli tests benchmarks
	$(BIN)/ruff format --check meshsim cli tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format meshsim cli tests benchmarks
	$(BIN)/ruff check --fix meshsim cli tests benchmarks

# Calibrate the cost model against the in-process proxy on this machine, then
# compare predictions with held-out measurements (reports/validation/).
validate: $(STAMP)
	$(BIN)/meshsim validate models/calibrated/lab.yaml --calibrate --out reports/validation --exit-zero

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The Rust reference sidecar of the calibration lab (proxies/rust-sidecar), built offline
# from the crates Debian ships (apt-get install cargo librust-hyper-dev librust-tokio-dev
# librust-tokio-rustls-dev librust-rustls-pemfile-dev); skipped with a note without cargo.
CARGO ?= cargo
.PHONY: rust-sidecar
rust-sidecar:
	@if command -v $(CARGO) >/dev/null 2>&1; then \
		cd proxies/rust-sidecar && $(CARGO) build --release --offline; \
	else \
		echo "cargo not found: proxies/rust-sidecar not built (see proxies/README.md)"; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
