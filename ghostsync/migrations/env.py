"""Alembic runs this file; the environment itself is ``ghostsync.migrations.environment``."""

from ghostsync.migrations.environment import run

run()
