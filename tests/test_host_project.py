"""ghostsync inside an application's existing Alembic project (README: "Inside an existing Alembic project").

A throwaway host project with a history of its own (public.products) adds
ghostsync's versions directory to its ``version_locations`` and a revision of
its own whose table has a foreign key to public.users (``depends_on =
"ghostsync_0001"``). ``alembic upgrade heads`` runs both branches in one
shared ``alembic_version``; the ghostsync branch then goes down and up alone,
and the host's tables and rows, and every profile, stay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ghostsync import chain
from tests.paths import REPO
from tests.seeding import ghost_count, ghostsync_cli, profiles, seed_ghosts

GHOSTSYNC_HEAD = chain.head()
GHOSTSYNC_VERSIONS = REPO / "ghostsync" / "migrations" / "versions"
GHOSTSYNC_OBJECTS = (
    "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal),"
    " (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
    "  AND proname IN ('handle_new_user', 'handle_user_updated', 'handle_user_deleted'))"
)

HOST_INI = """\
[alembic]
script_location = %(here)s/migrations
# The host's own revisions, then ghostsync's (a checkout or a vendored copy).
version_locations = %(here)s/migrations/versions {ghostsync_versions}
path_separator = space

[loggers]
keys = root

[handlers]
keys =

[formatters]
keys =

[logger_root]
level = WARNING
handlers =
"""

HOST_ENV = '''\
"""The host application's env.py: one engine, one alembic_version, both branches."""
import os

from alembic import context
from sqlalchemy import create_engine, pool

from ghostsync import urls

config = context.config
url = urls.normalize(
    context.get_x_argument(as_dictionary=True).get("database_url") or os.environ["DATABASE_URL"]
)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    # transaction_per_migration: ghostsync's revisions expect their own
    # transaction each (lock timeouts, the backfill's per-batch commits).
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
'''

HOST_0001 = '''\
"""products (the host's history before ghostsync)"""
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
    op.execute("""
        CREATE TABLE public.products (sku text PRIMARY KEY, price_cents integer NOT NULL);
        ALTER TABLE public.products ENABLE ROW LEVEL SECURITY;
    """)


def downgrade():
    op.execute("DROP TABLE public.products")
'''

HOST_0002 = '''\
"""orders, each of one user: a foreign key to ghostsync's public.users"""
from alembic import op

revision = "host_0002"
down_revision = "host_0001"
branch_labels = None
# public.users comes from ghostsync_0001; depending on it orders this revision after it.
depends_on = "ghostsync_0001"


def upgrade():
    op.execute("""
        CREATE TABLE public.orders (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
          sku text NOT NULL REFERENCES public.products (sku)
        );
        ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
    """)


def downgrade():
    op.execute("DROP TABLE public.orders")
'''


def make_host(root: Path, *, with_ghostsync: bool) -> Path:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "migrations" / "env.py").write_text(HOST_ENV)
    (versions / "host_0001_products.py").write_text(HOST_0001)
    locations = ""
    if with_ghostsync:
        (versions / "host_0002_orders.py").write_text(HOST_0002)
        locations = str(GHOSTSYNC_VERSIONS)
    (root / "alembic.ini").write_text(HOST_INI.format(ghostsync_versions=locations))
    return root / "alembic.ini"


def alembic(db, ini: Path, *args: str) -> str:
    """The host's ``alembic`` command line, run as its deploy pipeline would."""
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), *args],
        cwd=ini.parent, env=dict(os.environ, DATABASE_URL=db.url()),
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def versions(db) -> set[str]:
    return {row[0] for row in db.sql("SELECT version_num FROM public.alembic_version")}


def host_rows(db) -> tuple:
    return (db.sql("SELECT sku, price_cents FROM public.products ORDER BY sku"),
            db.sql("SELECT id, user_id::text, sku FROM public.orders ORDER BY id"))


def test_ghostsync_inside_a_host_project(db, tmp_path):
    # The application's project as it was: its own history, ghosts in auth.users.
    ini = make_host(tmp_path / "host", with_ghostsync=False)
    alembic(db, ini, "upgrade", "heads")
    assert versions(db) == {"host_0001"}
    db.sql("INSERT INTO public.products VALUES ('tea', 450), ('cake', 700)", user="postgres")
    ghosts = seed_ghosts(db)

    # ghostsync joins: its versions directory, and a host revision that needs public.users.
    make_host(tmp_path / "host", with_ghostsync=True)
    heads = alembic(db, ini, "heads")
    assert f"{GHOSTSYNC_HEAD} (ghostsync) (head)" in heads and "host_0002 (app) (head)" in heads
    alembic(db, ini, "upgrade", "heads")
    assert versions(db) == {GHOSTSYNC_HEAD, "host_0002"}, "one shared alembic_version, one row per branch head"
    assert ghost_count(db) == 0
    fk = db.value("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                  "WHERE conrelid = 'public.orders'::regclass AND confrelid = 'public.users'::regclass")
    assert fk == "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"
    # ghostsync_0001 closes the shared version table to the end users' API roles.
    assert db.value("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.alembic_version'::regclass") is True
    assert db.value("SELECT has_table_privilege('anon', 'public.alembic_version', 'SELECT')") is False

    # The trigger makes a new user's profile at once: the host can take their order.
    with db.auth() as auth:
        buyer = auth.signup(email="buyer@example.com", confirmed=True)
    db.sql("INSERT INTO public.orders (user_id, sku) VALUES (%s, 'tea'), (%s, 'cake')",
           (str(buyer), str(ghosts["email_confirmed"])), user="postgres")
    kept_host, kept_profiles = host_rows(db), profiles(db)
    assert len(kept_host[1]) == 2

    # The ghostsync branch alone, down and up. Down to ghostsync_0001, not base: host_0002
    # depends on ghostsync_0001 (ghostsync_0001's downgrade is a no-op anyway).
    alembic(db, ini, "downgrade", "ghostsync@ghostsync_0001")
    assert db.sql(GHOSTSYNC_OBJECTS) == [(0, 0)], "every trigger and function of ghostsync gone"
    assert versions(db) == {"host_0002"}, "ghostsync_0001 is implied by host_0002's dependency"
    assert host_rows(db) == kept_host
    assert profiles(db) == kept_profiles
    with db.auth() as auth:
        meanwhile = auth.signup(email="meanwhile@example.com")
    assert ghost_count(db) == 1

    alembic(db, ini, "upgrade", "ghostsync@head")
    assert versions(db) == {GHOSTSYNC_HEAD, "host_0002"}
    assert ghost_count(db) == 0 and str(meanwhile) in profiles(db)
    after = profiles(db)
    assert {k: after[k] for k in kept_profiles} == kept_profiles, "no profile lost or changed"
    assert host_rows(db) == kept_host
    assert db.sql(GHOSTSYNC_OBJECTS) == [(3, 3)]
    # status reads ghostsync's own row of the shared version table, whatever the host's rows are
    proc = ghostsync_cli(db, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["revision"] == GHOSTSYNC_HEAD

    # What the README warns about: ghostsync@base also downgrades every host revision that
    # depends on ghostsync (alembic's rule), here dropping public.orders; profiles stay.
    alembic(db, ini, "downgrade", "ghostsync@base")
    assert versions(db) == {"host_0001"}
    assert db.value("SELECT to_regclass('public.orders')") is None
    assert profiles(db) == after
    assert db.sql("SELECT sku, price_cents FROM public.products ORDER BY sku") == kept_host[0]
