# provisor: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements/test.txt
LATEST := .venv-latest

.PHONY: demo test lint audit bench docs lock test-latest system-deps services clean

# The venv holds exactly the lock (versions and hashes), so every machine tests the same
# code: it is made anew when the lock or pyproject.toml changes. provisor itself goes in
# editable, built by the locked hatchling, with its dependencies already in place;
# `pip check` fails if pyproject.toml asks for something the lock does not hold.
$(STAMP): $(LOCK) requirements/pip.txt pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/pip.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	$(BIN)/python -m compileall -q src  # bytecode once, so every CLI call starts faster
	touch $(STAMP)

# Refresh every lock file to the newest releases pyproject.toml and requirements/*.in allow,
# for every platform and Python provisor supports; the runtime lock takes the test lock's
# versions. Review the diff, then `make test`.
COMPILE := $(BIN)/uv pip compile --quiet --upgrade --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command "make lock"
lock: $(STAMP)
	$(COMPILE) pyproject.toml requirements/dev.in --extra test -o requirements/test.txt
	$(COMPILE) pyproject.toml -c requirements/test.txt -o requirements/runtime.txt
	$(COMPILE) requirements/bench.in -o requirements/bench.txt
	$(COMPILE) requirements/pip.in -c requirements/test.txt -o requirements/pip.txt

# The suite against the newest releases, unlocked, in a venv of its own: drift shows up
# here on purpose, not in CI by surprise. The versions it ran with: $(LATEST)/versions.txt.
test-latest: system-deps services
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e '.[test]'
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/$(PYTEST)

# Debian packages the testbed and benchmarks need (only when root; see docs/testbed.md).
system-deps:
	@scripts/install-system-deps.sh

# PostgreSQL must answer for the store tests; start it if the machine has it but it is down.
services:
	@scripts/ensure-services.sh

demo: system-deps $(STAMP)
	$(BIN)/python scripts/demo.py

# Three processes: most of the suite's time is waiting on machines and processes, so
# even on two cores three streams take well under half as long as one (40 min one, 17.6
# two, before Day 2; with it 20.8 min two, 17.7 three). A module stays in one process
# (loadscope), with its module fixtures.
PYTEST := pytest -q -n 3 --dist loadscope
test: system-deps $(STAMP) services
	$(BIN)/$(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	@$(MAKE) --no-print-directory audit

# Known vulnerabilities in the locked versions (PyPI's advisory data, over the network).
audit: $(STAMP)
	@BIN=$(BIN) scripts/audit.sh

# Results go to docs/benchmarks.md (each script rewrites its own section).
bench: system-deps $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/testbed_startup.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/ec2_launch.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/config_changes.py
	$(BIN)/python bench/gather.py

# The CLI reference is generated from the CLI itself.
docs: $(STAMP)
	$(BIN)/python scripts/cli_docs.py docs/cli.md

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .mypy_cache .ruff_cache
