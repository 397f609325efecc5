"""Throwaway Supabase-like PostgreSQL databases, for the demo and the tests.

- ``binaries``: where a major version's server binaries come from;
- ``server``: one server in a temporary directory, on loopback;
- ``supabase``: the roles (three role setups: "membership", "current", "hosted" with a
  model of supautils' drop_trigger_grants), schemas, auth tables and grants of a Supabase
  database, and SQL that apps already have;
- ``authservice``: writes to the auth tables made the way Supabase's auth service (GoTrue) makes them;
- ``loadgen``: bounded signup, sign-in and token-refresh load;
- ``fixtures`` and ``plugin``: the servers and databases as pytest fixtures.
"""
