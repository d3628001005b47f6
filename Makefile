# Two commands set everything up: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pass flags to the trainer, e.g. `make train ARGS="--env cartpole --total-steps 200000"`.
ARGS ?=

.PHONY: train test soak clean bench bench-check

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) bash scripts/setup_venv.sh $(VENV)
	touch $@

train: $(VENV)/.installed
	$(PY) -m recurrent_ppo train $(ARGS)

# Tests run in TEST_WORKERS parallel processes (pytest-xdist; one torch thread each): 2 suits the 2-core CI machine.
# worksteal: a worker that runs out of tests takes queued ones from the other, so neither idles at the end.
TEST_WORKERS ?= 2

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

# Many iterations of a small config: flat memory and no recompile (bench/soak.py).
soak: $(VENV)/.installed
	$(PY) bench/soak.py --iterations 1000 $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# Benchmarks (bench/README.md). `make bench` runs bench/ into bench/baselines/<machine>/latest.json; RECORD=1 also
# stores that run as the machine's baseline.json. `make bench-check` runs again and fails when a median, relative
# to the calibration workload timed between its rounds, is more than THRESHOLD percent above the baseline's (no
# baseline: it says so and fails, unless RECORD=1); ABSOLUTE=1 compares the medians themselves.
# ARGS go to pytest, e.g. ARGS="-k gae" (a subset run: benchmarks it leaves out do not fail the check).
THRESHOLD ?= 10
RECORD ?=
RECORDING = $(filter 1 yes true,$(RECORD))
ABSOLUTE ?=
BENCH_BASELINES ?= bench/baselines
ABSOLUTE_FLAG = $(if $(filter 1 yes true,$(ABSOLUTE)),--absolute)
BENCH_DIR = dir=$(BENCH_BASELINES)/$$($(PY) bench/machine.py) || exit 1
BENCH_RUN = mkdir -p $$dir && $(PY) -m pytest bench -p no:cacheprovider --benchmark-enable \
	--benchmark-columns=median,iqr,min,max,rounds --benchmark-json=$$dir/latest.json $(ARGS)

bench: $(VENV)/.installed
	@$(BENCH_DIR); $(BENCH_RUN) || exit 1; \
	if [ -n "$(RECORDING)" ]; then $(PY) bench/check.py record $$dir; \
	elif [ ! -f $$dir/baseline.json ]; then echo "No baseline in $$dir: make bench RECORD=1 stores this run as it."; \
	else echo "Saved $$dir/latest.json; make bench-check compares a new run with $$dir/baseline.json."; fi

bench-check: $(VENV)/.installed
	@$(BENCH_DIR); \
	if [ ! -f $$dir/baseline.json ] && [ -z "$(RECORDING)" ]; then $(PY) bench/check.py gate $$dir; exit $$?; fi; \
	$(BENCH_RUN) || exit 1; \
	if [ -f $$dir/baseline.json ]; then \
		ids=$$($(PY) bench/check.py regressed $$dir --threshold $(THRESHOLD) $(ABSOLUTE_FLAG)) || exit 2; \
		if [ -n "$$ids" ]; then echo "Running the regressed benchmarks once more:" $$ids; \
			$(PY) -m pytest $$ids -p no:cacheprovider -q --benchmark-enable --benchmark-json=$$dir/rerun.json \
				|| exit 1; \
			$(PY) bench/check.py keep-best $$dir $$dir/rerun.json $(ABSOLUTE_FLAG) || exit 2; fi; fi; \
	$(PY) bench/check.py gate $$dir --threshold $(THRESHOLD) $(if $(RECORDING),--record-if-missing) \
		$(if $(ARGS),--allow-missing) $(ABSOLUTE_FLAG)
