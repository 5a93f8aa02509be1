# provisor: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench docs system-deps services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q src  # bytecode once, so every CLI call starts faster
	touch $(STAMP)

# Debian packages the testbed and benchmarks need (only when root; see docs/testbed.md).
system-deps:
	@scripts/install-system-deps.sh

# PostgreSQL must answer for the store tests; start it if the machine has it but it is down.
services:
	@scripts/ensure-services.sh

demo: system-deps $(STAMP)
	$(BIN)/python scripts/demo.py

test: system-deps $(STAMP) services
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

# Results go to docs/benchmarks.md (each script rewrites its own section).
bench: system-deps $(STAMP)
	$(BIN)/python bench/testbed_startup.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/ec2_launch.py

# The CLI reference is generated from the CLI itself.
docs: $(STAMP)
	$(BIN)/typer provisor.cli utils docs --name provisor --title "provisor CLI reference" \
		--output docs/cli.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
