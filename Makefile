# meshsim: `make run` installs and runs the flagship scenario; `make test` installs
# and runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make test` runs a bounded, rotating sample of the slow soak tests and of the closed-form
# statistical tests (each takes tens of seconds to minutes); `make test-all` runs every one.
SLOW_SAMPLE ?= 3
STATISTICAL_SAMPLE ?= 3
UNIT := not slow and not timing and not statistical and not integration

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

# Two passes: the bulk in parallel, then the tests that time real sockets against
# the wall clock (marked timing) and samples of the slow and statistical ones, alone on
# the machine so that the wall clock and the closed forms are not disturbed. The
# calibration lab's end-to-end run (marked lab: two minutes, mostly its loads' wall clock,
# on less than a core) runs beside the bulk in a process of its own, its output shown after.
test: $(STAMP)
	@lablog=$$(mktemp); labtmp=$$(mktemp -d); \
	$(BIN)/python -m pytest -q -m "lab and not slow and not timing and not statistical" \
		--basetemp "$$labtmp" > "$$lablog" 2>&1 & lab=$$!; \
	trap 'kill $$lab 2>/dev/null' INT TERM; \
	$(BIN)/python -m pytest -n 2 -m "not slow and not timing and not statistical and not lab"; \
	bulk=$$?; wait $$lab; status=$$?; echo "--- the lab's run (pytest -m lab):"; \
	cat "$$lablog"; rm -rf "$$lablog" "$$labtmp"; [ $$bulk -eq 0 ] && [ $$status -eq 0 ]
	$(BIN)/python -m pytest -m "slow or timing or statistical" \
		--slow-sample $(SLOW_SAMPLE) --statistical-sample $(STATISTICAL_SAMPLE)

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not timing and not statistical"
	$(BIN)/python -m pytest -m "slow or timing or statistical"

# The inner loop: lint, then the unit tier (no sockets, subprocesses, notebooks or
# statistical runs) in parallel.
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
