# The two commands a new user types: `make chat` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# constraints.txt pins every version, so two installs (and the image) get the same packages.
PIP_INSTALL := PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: chat test bench faults mutate install clean lock

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "personae needs Python 3.11 or newer"; exit 1; }
	@echo "[1/4] Creating the virtualenv $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "[2/4] The bundled model's server: llama.cpp (built once, then reused)"
	@$(PY) infra/llama_wheel.py $(PY)
	@echo "[3/4] Installing personae and its packages (a minute or two)"
	@$(PIP_INSTALL) -e '.[dev,local]'
	@echo "[4/4] Installed: $(VENV)/bin/personae"
	@touch $(STAMP)

install: $(STAMP)

chat: $(STAMP)
	@$(VENV)/bin/personae db upgrade >/dev/null
	$(VENV)/bin/personae chat --character Hamlet --user Elena

# Six workers (pytest-xdist): much of the suite waits on servers, child processes and outages held
# on purpose, not the CPU, so six shares side by side take less time even on two cores (317 s
# against 355 s for four, back to back on one tree: docs/testing.md). Each worker has its own test database,
# Redis key prefix, throwaway servers and llama.cpp server (docs/testing.md). Work stealing: a worker
# that runs out takes half of the longest queue left, so no worker is left alone with a long tail.
TEST_WORKERS ?= 6
# The suite starts a few hundred Python processes (`personae` itself, fault and replica runs): each
# compiles the project's modules again unless their bytecode may be written (__pycache__, ignored by git).
test: export PYTHONDONTWRITEBYTECODE :=
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Figures for docs/performance.md: PERSONAE_DATABASE_URL / PERSONAE_REDIS_URL choose the backends.
bench: $(STAMP)
	@$(VENV)/bin/personae db upgrade >/dev/null
	$(VENV)/bin/personae bench --users 200 --turns 5

# Write constraints.txt anew from the installed virtualenv (after changing pyproject.toml's dependencies).
lock: $(STAMP)
	@{ echo "# Every package version personae installs (make lock writes it; make install and the image use it)."; \
	   $(PY) -m pip list --format=freeze --exclude-editable --disable-pip-version-check | grep -vE "^(pip|setuptools)==";  } > constraints.txt
	@echo "wrote constraints.txt"

# The fault table for docs/reliability.md: `personae run` through crashes and outages (throwaway servers).
faults: $(STAMP)
	$(PY) -m tests.faults $(FAULTS)

# Mutation testing before a release (slow, so not part of `make test`): cosmic-ray, in a virtualenv of
# its own, mutates core/ and the adapters' pacing and admin modules one change at a time in a scratch
# copy, runs each module's tests after every change and prints the score. MUTATE=core/flood.py: one module.
MUTATE_VENV ?= .venv-mutate
COSMIC_RAY ?= cosmic-ray==8.7.0

$(MUTATE_VENV)/.installed:
	@$(PYTHON) -m venv $(MUTATE_VENV)
	@$(MUTATE_VENV)/bin/pip install --quiet --disable-pip-version-check $(COSMIC_RAY)
	@touch $@

mutate: $(STAMP) $(MUTATE_VENV)/.installed
	$(PY) infra/mutate.py $(MUTATE_VENV)/bin $(MUTATE)

clean:
	rm -rf $(VENV) $(MUTATE_VENV) .mutate .pytest_cache
