"""ghostsync: ends Supabase ghost users (auth.users rows without a public.users profile).

The migration chain ships in the package (``ghostsync/migrations/versions``,
reached by Alembic as ``ghostsync:migrations/versions``), with what its
revisions use (``ghostsync.migrations``: the kit, the environment). The
rest is the tools around it: the ``ghostsync`` command (``cli``) and the
modules it wires together, and the throwaway Supabase-like databases and
pytest plugin of the demo and the tests (``ghostsync.testing``).
"""

__version__ = "0.1.0"
