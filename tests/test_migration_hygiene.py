"""Migration hygiene: pytest-alembic's built-in checks on the Supabase-like database.

- single head: the chain has one head (the ``ghostsync`` branch);
- upgrade: base to head runs on a fresh Supabase-like database;
- up/down consistency: every revision upgrades, then every revision downgrades
  and upgrades again;
- model definitions match the DDL: an autogenerate against the database the
  revisions built finds nothing to change in ``ghostsync.models`` (auth.users
  is the auth service's table and is left out, see ``alembic/env.py``).

pytest-alembic's automatic collection is switched off in pyproject.toml (it
breaks collection on pytest 9); its tests are imported here and run through
the fixtures below, once per PostgreSQL version, migrating as role postgres.
"""

from __future__ import annotations

import pytest
from alembic.config import Config
from pytest_alembic.tests import (  # noqa: F401  (collected as tests of this module)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from tests.paths import REPO


@pytest.fixture
def alembic_engine(db):
    """The Supabase-like database of ``db``, as the migrating role (postgres)."""
    return db.engine()


@pytest.fixture
def alembic_config():
    config = Config(str(REPO / "alembic.ini"))
    config.attributes["configure_logger"] = False
    return config
