# wattserve: `make demo` runs the embedded default; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data

.PHONY: demo test install dev lint docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

demo: install
	$(BIN)/wattserve simulate --out runs/demo

test: dev
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check src tests bench scripts

docs: install
	$(BIN)/wattserve calibrate --data $(DATA) --out docs/calibration.md

bench: install
	$(BIN)/python bench/sim_speed.py --data $(DATA)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
