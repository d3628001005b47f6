# Two commands set everything up: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pass flags to the trainer, e.g. `make train ARGS="--env cartpole --total-steps 200000"`.
ARGS ?=

.PHONY: train test clean

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) bash scripts/setup_venv.sh $(VENV)
	touch $@

train: $(VENV)/.installed
	$(PY) -m recurrent_ppo train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
