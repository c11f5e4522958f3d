# wattserve: `make demo` runs the embedded default; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data

.PHONY: demo demo-serve test install dev runtime lint docs validate bench bench-engine pals-models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[runtime]'
	touch $(VENV)/.installed $@

$(VENV)/.fit: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[fit]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

runtime: $(VENV)/.runtime

dev: $(VENV)/.dev

demo: install
	$(BIN)/wattserve simulate --out runs/demo

# Serve the tiny model on CPU (1 prefill + 1 decode worker), bench it, print the results, stop.
demo-serve: runtime
	@$(BIN)/wattserve serve --model tiny --prefill 1 --decode 1 --port 8765 > runs-serve.log 2>&1 & pid=$$!; \
	for i in $$(seq 1 120); do curl -sf http://127.0.0.1:8765/health >/dev/null 2>&1 && break; \
	  kill -0 $$pid 2>/dev/null || { cat runs-serve.log; exit 1; }; sleep 0.5; done; \
	head -2 runs-serve.log; \
	$(BIN)/wattserve bench --base-url http://127.0.0.1:8765 --num-prompts 100 --request-rate 20 \
	  --random-input-len 64 --random-output-len 32 --ignore-eos --goodput ttft:1000 tpot:50 \
	  --percentile-metrics ttft,tpot,itl,e2el; status=$$?; \
	curl -s http://127.0.0.1:8765/metrics | grep -E '^wattserve:gpu_(power|energy)' ; \
	kill $$pid; wait $$pid 2>/dev/null; rm -f runs-serve.log; exit $$status

test: dev
	$(BIN)/python -m pytest -q -n auto

lint: dev
	$(BIN)/ruff check src tests bench scripts

docs: install
	$(BIN)/wattserve calibrate --data $(DATA) --validate docs/validate.json --out docs/calibration.md

# Simulator vs our runtime on this machine (docs/calibration.md reads docs/validate.json).
validate: runtime
	$(BIN)/python -m pip install -q -e '.[runtime,fit]'
	$(BIN)/wattserve validate --out runs/validate
	cp runs/validate/validate.json docs/validate.json

bench: install
	$(BIN)/python bench/sim_speed.py --data $(DATA)

bench-engine: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/engine_speed.py

# PALS's offline models (docs/pals-models.md): profile the simulator, fit, ship the predictions.
PALS_MODELS := mixtral-8x7b,qwen3-30b-a3b
PALS_BATCHES := 1,4,8,16,32,64,128,256
PALS_EP ?= 1,4
pals-models: $(VENV)/.fit
	mkdir -p runs/pals
	$(BIN)/wattserve profile --backend sim --gpu a100 --caps 100:400:50 --model $(PALS_MODELS) --tp 4 \
	  --ep $(PALS_EP) --batches $(PALS_BATCHES) --duration 60 --seed 0 --out runs/pals/a100.csv
	$(BIN)/wattserve profile --backend sim --gpu h100 --caps 200:700:50 --model $(PALS_MODELS) --tp 4 \
	  --ep $(PALS_EP) --batches $(PALS_BATCHES) --duration 60 --seed 0 --out runs/pals/h100.csv
	{ cat runs/pals/a100.csv; tail -n +2 runs/pals/h100.csv; } > runs/pals/profile.csv
	$(BIN)/wattserve fit --profile runs/pals/profile.csv --out src/wattserve/data/pals_models.json \
	  --folds 5 --seed 0

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
