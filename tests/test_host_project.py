"""ghostsync inside an application's Alembic project, installed from its wheel (README: host projects).

A throwaway host project OUTSIDE the checkout, with a history of its own
(public.products), installs ghostsync from the wheel built from the checkout
into a fresh virtualenv (``installed_wheel``: one build and one virtualenv per
session, tests/test_wheel.py) and lists ``ghostsync:migrations/versions`` in
its ``version_locations``: nothing is vendored. Its own revision depends on
ghostsync_0001 (a foreign key to public.users). ``alembic upgrade heads`` runs
both branches in one shared ``alembic_version``; the ghostsync branch goes
down and up alone. ``ghostsync --alembic-config host/alembic.ini revision``
writes the host's follow-up into the host's folder under an id that is not
ghostsync's, and ``ghostsync status`` finds ghostsync's version row by
membership of the branch.

Then ghostsync's next release adds its own next revision on the same parent
as the host's follow-up (a second version location stands for the new
package's folder): two heads on ghostsync's branch. Status and the generator
refuse with one line that says to merge; ``alembic merge`` writes the merge
into the host's folder; after ``alembic upgrade heads`` status, and the
declaration of what is synced, follow the merged head.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ghostsync import chain, generator
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.seeding import ghost_count, profiles, seed_ghosts
from tests.test_generator import MESSAGE, fill_in_display_name, revision_of
from tests.test_wheel import Installed, installed_wheel  # noqa: F401  (the session's wheel and virtualenv)

SCRIPT = chain.script_directory()
GHOSTSYNC_HEAD = chain.head(SCRIPT)
NEXT_NUMBER = max(int(m.group(1)) for r in chain.branch_revisions(SCRIPT) if (m := generator.OWN_ID.match(r))) + 1
NEXT_RELEASE = f"ghostsync_{NEXT_NUMBER:04d}"
GHOSTSYNC_OBJECTS = (
    "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal"
    "        AND tgname LIKE 'ghostsync%'),"
    " (SELECT count(*) FROM pg_proc WHERE pronamespace = 'ghostsync'::regnamespace)"
)

HOST_INI = """\
[alembic]
script_location = %(here)s/migrations
# The host's own revisions (where `ghostsync revision` writes), then ghostsync's chain,
# reached in the installed package: nothing of it is copied here.
version_locations = %(here)s/migrations/versions ghostsync:migrations/versions{extra}
path_separator = space

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

HOST_ENV = '''\
"""The host application's env.py: one engine, one alembic_version, every branch."""
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from ghostsync import urls

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def url() -> str:
    given = context.get_x_argument(as_dictionary=True).get("database_url") or os.environ["DATABASE_URL"]
    return urls.normalize(given)


# transaction_per_migration: ghostsync's revisions expect a transaction each (the lock
# budget of their steps, the short transactions of their data jobs).
if context.is_offline_mode():
    context.configure(url="postgresql+psycopg2://", literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
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

# ghostsync's next release, simulated: its own next revision on the same parent as the host's follow-up.
NEXT_RELEASE_REVISION = '''\
"""The next release's revision: a function of its own (stands for any change ghostsync ships next).

Revision ID: {revision}
Revises: {parent}
Create Date: 2026-12-01
"""

from __future__ import annotations

from ghostsync.migrations import kit

revision = "{revision}"
down_revision = "{parent}"
branch_labels = None
depends_on = None

RELEASE_MARKER = kit.Function("ghostsync.release_marker()", r"""
CREATE OR REPLACE FUNCTION ghostsync.release_marker()
RETURNS text
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $function$SELECT 'next release'::text$function$;
""")

DECLARES = kit.Declares(functions=(RELEASE_MARKER,))


def upgrade() -> None:
    kit.install_function(RELEASE_MARKER, revision)


def downgrade() -> None:
    kit.drop_function("ghostsync.release_marker()")
'''


def make_host(installed: Installed, root: Path, *, with_ghostsync: bool, extra_location: str = "") -> Path:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "migrations" / "env.py").write_text(HOST_ENV)
    # the template `alembic merge` renders (what `alembic init` leaves in a project)
    template = next(installed.site_packages.glob("alembic/templates/generic/script.py.mako"))
    shutil.copy(template, root / "migrations" / "script.py.mako")
    (versions / "host_0001_products.py").write_text(HOST_0001)
    if with_ghostsync:
        (versions / "host_0002_orders.py").write_text(HOST_0002)
        ini = HOST_INI.format(extra=f" {extra_location}" if extra_location else "")
    else:
        ini = HOST_INI.replace(" ghostsync:migrations/versions{extra}", "")
    (root / "alembic.ini").write_text(ini)
    return root / "alembic.ini"


def alembic(installed: Installed, db: SupabaseDatabase, ini: Path, *args: str) -> str:
    """The host's ``alembic`` command line (the virtualenv's), run as its deploy pipeline would."""
    proc = installed.run("alembic", "-c", str(ini), *args, cwd=ini.parent, url=db.url(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def ghostsync(installed: Installed, db: SupabaseDatabase, ini: Path | None, *args: str) -> \
        subprocess.CompletedProcess[str]:
    config = ("--alembic-config", str(ini)) if ini is not None else ()
    return installed.run("ghostsync", *config, *args, cwd=ini.parent if ini else installed.root, url=db.url())


def status(installed: Installed, db: SupabaseDatabase, ini: Path) -> tuple[int, dict[str, Any]]:
    proc = ghostsync(installed, db, ini, "status", "--json")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return lines[0]


def versions(db: SupabaseDatabase) -> set[str]:
    return {row[0] for row in db.sql("SELECT version_num FROM public.alembic_version")}


def host_rows(db: SupabaseDatabase) -> tuple[Any, ...]:
    return (db.sql("SELECT sku, price_cents FROM public.products ORDER BY sku"),
            db.sql("SELECT id, user_id::text, sku FROM public.orders ORDER BY id"))


def test_ghostsync_from_its_wheel_in_a_host_project(installed_wheel: Installed, db: SupabaseDatabase,  # noqa: F811
                                                    tmp_path: Path) -> None:
    installed = installed_wheel
    host = tmp_path / "host"
    # The application's project as it was: its own history, ghosts in auth.users.
    ini = make_host(installed, host, with_ghostsync=False)
    alembic(installed, db, ini, "upgrade", "heads")
    assert versions(db) == {"host_0001"}
    db.sql("INSERT INTO public.products VALUES ('tea', 450), ('cake', 700)", user="postgres")
    ghosts = seed_ghosts(db)

    # ghostsync joins: the installed package's chain, and a host revision that needs public.users.
    make_host(installed, host, with_ghostsync=True)
    heads = alembic(installed, db, ini, "heads")
    assert f"{GHOSTSYNC_HEAD} (ghostsync) (head)" in heads and "host_0002 (app) (head)" in heads
    shown = alembic(installed, db, ini, "show", "ghostsync_0001")
    assert str(installed.site_packages / "ghostsync" / "migrations" / "versions") in shown, "nothing vendored"
    assert sorted(p.name for p in (host / "migrations" / "versions").glob("*.py")) == \
        ["host_0001_products.py", "host_0002_orders.py"]
    alembic(installed, db, ini, "upgrade", "heads")
    assert versions(db) == {GHOSTSYNC_HEAD, "host_0002"}
    assert ghost_count(db) == 0
    with db.auth() as auth:
        buyer = auth.signup(email="buyer@example.com", confirmed=True)
    db.sql("INSERT INTO public.orders (user_id, sku) VALUES (%s, 'tea'), (%s, 'cake')",
           (str(buyer), str(ghosts["email_confirmed"])), user="postgres")
    kept_host, kept_profiles = host_rows(db), profiles(db)

    # The ghostsync branch alone, down and up (to ghostsync_0001, on which host_0002 depends).
    alembic(installed, db, ini, "downgrade", "ghostsync@ghostsync_0001")
    assert db.sql(GHOSTSYNC_OBJECTS) == [(0, 0)], "every trigger and function of ghostsync gone"
    assert versions(db) == {"host_0002"}, "ghostsync_0001 is implied by host_0002's dependency"
    assert (host_rows(db), profiles(db)) == (kept_host, kept_profiles)
    with db.auth() as auth:
        meanwhile = auth.signup(email="meanwhile@example.com")
    assert ghost_count(db) == 1
    alembic(installed, db, ini, "upgrade", "ghostsync@head")
    assert versions(db) == {GHOSTSYNC_HEAD, "host_0002"}
    assert ghost_count(db) == 0 and str(meanwhile) in profiles(db)
    assert host_rows(db) == kept_host
    rc, found = status(installed, db, ini)
    assert (rc, found["revision"], found["at_head"]) == (0, GHOSTSYNC_HEAD, True), found["problems"]

    # The generator never writes into the installed package.
    line = one_line(ghostsync(installed, db, None, "revision", "-m", "a follow-up"))
    assert "ghostsync is installed" in line and "version_locations" in line
    packaged = installed.site_packages / "ghostsync" / "migrations" / "versions"
    line = one_line(ghostsync(installed, db, ini, "revision", "-m", "a follow-up", "--version-path", str(packaged)))
    assert line.startswith("ghostsync: refusing to write into") and "site-packages" in line
    assert sorted(p.name for p in packaged.glob("*.py")) == sorted(
        p.name for p in (Path(generator.PACKAGE_VERSIONS)).glob("*.py"))

    # The host's follow-up: in the host's folder, on ghostsync's branch, under an id of its own.
    proc = ghostsync(installed, db, ini, "revision", "-m", MESSAGE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    follow_up_path, test_path = (Path(p) for p in proc.stdout.split())
    assert follow_up_path.parent == host / "migrations" / "versions" and test_path.parent == host / "tests"
    follow_up = revision_of(follow_up_path)
    assert re.fullmatch(r"[a-z0-9_]+_[0-9a-f]{8}", follow_up) and not follow_up.startswith("ghostsync")
    assert "ALEMBIC_INI = (Path(__file__).resolve().parent / \"../alembic.ini\").resolve()" in test_path.read_text()
    follow_up_path.write_text(fill_in_display_name(follow_up_path.read_text()))
    alembic(installed, db, ini, "upgrade", "heads")
    assert versions(db) == {follow_up, "host_0002"}
    with db.auth() as auth:
        named = auth.signup(email="named@example.com", user_meta={"full_name": "Named"})
    assert db.value("SELECT display_name FROM public.users WHERE id = %s", (str(named),)) == "Named"
    rc, found = status(installed, db, ini)
    assert (rc, found["revision"], found["head"], found["at_head"]) == (0, follow_up, follow_up, True), found
    assert codes(found) == [] and codes(found, "warnings") == []

    # ghostsync's next release brings its own next revision on the same parent: two heads.
    next_release = host / "next_release"
    next_release.mkdir()
    (next_release / f"{NEXT_NUMBER:04d}_next_release.py").write_text(
        NEXT_RELEASE_REVISION.format(revision=NEXT_RELEASE, parent=GHOSTSYNC_HEAD))
    make_host(installed, host, with_ghostsync=True, extra_location="%(here)s/next_release")
    heads = alembic(installed, db, ini, "heads")
    assert f"{follow_up} (ghostsync) (head)" in heads and f"{NEXT_RELEASE} (ghostsync) (head)" in heads, heads
    line = one_line(ghostsync(installed, db, ini, "status"))
    assert "2 heads" in line and "alembic merge" in line and follow_up in line and NEXT_RELEASE in line
    line = one_line(ghostsync(installed, db, ini, "revision", "-m", "another"))
    assert "2 heads" in line and "merge" in line

    # The host merges them; the merge lives in the host's folder.
    merged_out = alembic(installed, db, ini, "merge", "-m", "merge ghostsync's next release", follow_up, NEXT_RELEASE)
    [merge_path] = [Path(p) for p in re.findall(r"Generating (\S+\.py)", merged_out)]
    assert merge_path.parent == host / "migrations" / "versions"
    merged = revision_of(merge_path)
    alembic(installed, db, ini, "upgrade", "heads")
    assert versions(db) == {merged, "host_0002"}

    # Status and the declaration of what is synced follow the merged head.
    rc, found = status(installed, db, ini)
    assert (rc, found["revision"], found["head"], found["at_head"]) == (0, merged, merged, True), found["problems"]
    assert found["functions"]["ghostsync.release_marker()"]["state"] == "matches"
    assert found["triggers"]["ghostsync_on_auth_user_updated"]["matches"] is True
    declared = installed.run("python", "-c", (
        "import sys; from ghostsync import chain\n"
        f"d = chain.declared_at({merged!r}, chain.script_directory({str(ini)!r}))\n"
        "print(sorted(c.name for c in d.synced_columns)); print(sorted(d.functions))"))
    assert declared.returncode == 0, declared.stderr
    columns, functions = declared.stdout.splitlines()
    assert "'display_name'" in columns and "'ghostsync.release_marker()'" in functions
    db.sql("UPDATE public.users SET display_name = 'someone else' WHERE id = %s", (str(named),))
    rc, found = status(installed, db, ini)
    assert (rc, found["stale_profiles"]) == (1, 1) and "display_name" in found["problems"][0]["message"]
    db.sql("UPDATE public.users SET display_name = 'Named' WHERE id = %s", (str(named),))

    # The next follow-up revises the merge.
    proc = ghostsync(installed, db, ini, "revision", "-m", "after the merge")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'down_revision = "{merged}"' in Path(proc.stdout.split()[0]).read_text()


def codes(found: dict[str, Any], kind: str = "problems") -> list[str]:
    return [f["code"] for f in found[kind]]
