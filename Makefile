# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# The CPU wheel of torch is installed first: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

demo: $(VENV)/.installed
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/fleet-demo $(ARGS)

test: $(VENV)/.installed
	WANDB_MODE=disabled $(PY) -m pytest -q --durations=40

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/sim_throughput.py

bench-quick: $(VENV)/.installed
	$(PY) benchmarks/sim_throughput.py --quick

clean:
	rm -rf $(VENV) build *.egg-info outputs multirun wandb
