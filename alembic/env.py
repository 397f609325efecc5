"""The checkout's entry point for `alembic upgrade head`: the packaged environment, unchanged."""

from ghostsync.migrations.environment import run

run()
