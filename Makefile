# `make run` and `make test` install everything first (idempotent), so both work on a fresh machine.
VENV ?= .venv
ROUNDS ?= 5
export LANGGRAPH_CLI_NO_ANALYTICS = 1
export LANGSMITH_TRACING = false
export RAY_USAGE_STATS_ENABLED = 0
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install run test lint benchmarks bench-search

install:
	bash scripts/install.sh

run: install
	$(VENV)/bin/evoforge run circle_packing --rounds $(ROUNDS)

test: install
	bash scripts/test.sh

lint: install
	$(VENV)/bin/ruff check evoforge tests benchmarks
	$(VENV)/bin/mypy evoforge

benchmarks: install
	$(VENV)/bin/python benchmarks/memory.py
	$(VENV)/bin/python benchmarks/kernels.py
	$(VENV)/bin/python benchmarks/throughput.py
	$(VENV)/bin/python benchmarks/server.py

# EvoForge against OpenEvolve and ShinkaEvolve (their own venv), 20 minutes each plus the two ablations: ~1h40
bench-search: install
	$(VENV)/bin/python -m benchmarks.peers
	$(VENV)/bin/python benchmarks/search.py --ablate cognition --ablate analyzer
