# Set-up, the default training job and the test suite. Each target creates .venv when it is missing.
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel: an unpinned torch would pull a multi-GB CUDA build on a machine without a GPU.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install train test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

RUN_DIR ?= runs/default

# A second `make train` continues the same run (after Ctrl-C, say) instead of starting over.
train: $(STAMP)
	@if [ -f $(RUN_DIR)/checkpoints/latest.pt ]; then \
		$(PY) scripts/train.py --resume $(RUN_DIR); \
	else \
		$(PY) scripts/train.py --config configs/default.yaml --run-dir $(RUN_DIR); \
	fi

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check agent scripts tests

clean:
	rm -rf $(VENV) runs
