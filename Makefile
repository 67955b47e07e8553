# Two commands for a fresh machine: `make demo` (install, then run a document end to end with the
# real Claude Code CLI, offline) and `make test` (install, then the whole test suite).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLAUDE := node_modules/.bin/claude

.PHONY: install sysdeps pgready demo demo-team test test-fast lint bench clean

install: $(VENV)/.installed $(CLAUDE)

# Test-only system tools: tmux (TUI smoke test in a real terminal), faketime (wall-clock jump).
sysdeps:
	@command -v tmux >/dev/null && command -v faketime >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq tmux faketime >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq tmux faketime >/dev/null; fi; }

# PostgreSQL on 127.0.0.1:5432 for the team-mode store tests (installed and started if needed;
# EMDX_TEST_PG_URL points the tests elsewhere).
pgready:
	@bash scripts/ensure_postgres.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(CLAUDE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	$(CLAUDE) --version
	touch $@

demo: install
	$(PY) scripts/demo.py

# Team mode on one machine: a throwaway PostgreSQL database, two worker "hosts", six runs.
demo-team: install pgready
	$(PY) scripts/demo_team.py

test: install sysdeps pgready
	$(PY) -m pytest

test-fast: install pgready
	$(PY) -m pytest -m "not integration and not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy

bench: install pgready
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
