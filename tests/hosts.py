"""Host projects as a team makes them: ``alembic init``, then the README's host setup.

``alembic_init_host(root, canary_url, reads=...)`` makes a project with
Alembic's own ``alembic init`` (its stock ``env.py`` and ``alembic.ini``), whose
``sqlalchemy.url`` names a canary database (standing for the team's real one),
and whose ``version_locations`` list the host's folder and ghostsync's chain.
Every ``env.py`` runs with ``transaction_per_migration=True``, as the README
asks. Where its ``env.py`` takes the URL from:

- ``"ini"``: Alembic's stock ``env.py``, untouched apart from that setting
  (``sqlalchemy.url``);
- ``"DATABASE_URL"``: the README's way, ``DATABASE_URL`` put into
  ``sqlalchemy.url`` (the process must have it set, offline too);
- ``"elsewhere"``: ``APP_DATABASE_URL``, a variable ghostsync knows nothing of.

``app_revision=True`` adds the host's own branch: ``public.orders``, each
order of a ``public.users`` profile (``depends_on = "ghostsync_0001"``).

``run_pytest`` runs pytest in the host as its team would (the ghostsync[testing]
plugin from the entry point, no conftest); ``untouched`` asserts that nothing
of a chain reached the canary.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from ghostsync.testing.fixtures import SupabaseDatabase

READS = ("ini", "DATABASE_URL", "elsewhere")
ELSEWHERE = "APP_DATABASE_URL"

APP_REVISION = '''\
"""orders, each of one user: a foreign key to ghostsync's public.users"""
from alembic import op

revision = "app_0001"
down_revision = None
branch_labels = ("app",)
# public.users comes from ghostsync_0001
depends_on = "ghostsync_0001"


def upgrade():
    op.execute("""
        CREATE TABLE public.orders (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE
        );
        ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
    """)


def downgrade():
    op.execute("DROP TABLE public.orders")
'''


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected exactly one {old!r} in what alembic init wrote"
    return text.replace(old, new)


def alembic_init_host(root: Path, canary_url: str, reads: str = "ini", app_revision: bool = False) -> Path:
    """A host project made by ``alembic init`` whose ini names ``canary_url``; returns its alembic.ini."""
    assert reads in READS, reads
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "alembic.ini"
    config = Config(str(ini))
    config.attributes["configure_logger"] = False
    command.init(config, str(root / "migrations"))
    text = ini.read_text()
    text = _replace_once(text, "sqlalchemy.url = driver://user:pass@localhost/dbname",
                         f"sqlalchemy.url = {canary_url.replace('%', '%%')}")
    text = _replace_once(text, "path_separator = os", "path_separator = space")
    text = _replace_once(text, "[alembic]\n", "[alembic]\nversion_locations = %(here)s/migrations/versions "
                                              "ghostsync:migrations/versions\n")
    ini.write_text(text)

    env = root / "migrations" / "env.py"
    source = env.read_text()
    source = _replace_once(source, '        dialect_opts={"paramstyle": "named"},\n',
                           '        dialect_opts={"paramstyle": "named"},\n        transaction_per_migration=True,\n')
    source = _replace_once(source, "connection=connection, target_metadata=target_metadata",
                           "connection=connection, target_metadata=target_metadata, transaction_per_migration=True")
    if reads != "ini":
        variable = "DATABASE_URL" if reads == "DATABASE_URL" else ELSEWHERE
        source = _replace_once(
            source, "config = context.config\n",
            f'import os\n\nconfig = context.config\nconfig.set_main_option("sqlalchemy.url", '
            f'os.environ["{variable}"].replace("%", "%%"))\n')
    env.write_text(source)
    if app_revision:
        (root / "migrations" / "versions" / "app_0001_orders.py").write_text(APP_REVISION)
    return ini


def run_pytest(root: Path, major: int, *args: str, env: dict[str, str] | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """pytest in the host project, on PostgreSQL ``major``, with the environment a developer's shell has
    (``env`` added; nothing of this suite's own)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("GHOSTSYNC_ALEMBIC_CONFIG", "DATABASE_URL", ELSEWHERE, "PYTEST_ADDOPTS")}
    environment.update(env or {})
    # pytest-alembic, installed here for this suite, crashes collecting on pytest 9 (pyproject.toml)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:pytest_alembic",
         f"--supabase-pg-versions={major}", "--rootdir", str(root), *args],
        cwd=root, env=environment, capture_output=True, text=True, timeout=timeout)


def untouched(canary: SupabaseDatabase) -> None:
    """Nothing of ghostsync's chain or the host's reached the canary database."""
    found = canary.sql("SELECT to_regclass('public.alembic_version')::text, to_regnamespace('ghostsync')::text, "
                       "to_regclass('public.orders')::text")
    assert found == [(None, None, None)], f"the canary database was migrated: {found}"
