"""ghostsync: ends Supabase ghost users (auth.users rows without a public.users profile).

The migration chain lives in ``alembic/``; this package holds what the chain
and the tools around it share: the table models (``models``), database URLs
(``urls``), and the throwaway Supabase-like databases used by the demo and
the tests (``throwaway``).
"""

__version__ = "0.1.0"
