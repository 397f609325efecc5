"""Throwaway Supabase-like PostgreSQL databases, for the demo and the tests.

- ``binaries``: where a major version's server binaries come from;
- ``server``: one server in a temporary directory, on loopback;
- ``supabase``: the roles, schema and ``auth.users`` of a Supabase database;
- ``authservice``: writes to ``auth.users`` made the way Supabase's auth service makes them.
"""
