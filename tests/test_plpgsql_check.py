"""ghostsync's trigger functions pass plpgsql_check with no warning, as ``supabase db lint`` runs it.

``supabase db lint`` calls ``plpgsql_check_function(oid, format := 'json')`` with the extension's
default options. It leaves trigger functions out (they need their table to be checked); here each is
checked against auth.users, with the same defaults. Where the server has no plpgsql_check (the
PostgreSQL 17 build of the test harness) the test skips and says so; Debian's
``postgresql-15-plpgsql-check`` provides it for PostgreSQL 15.
"""

from __future__ import annotations

import json

import pytest

# The functions the head revision's signup path runs, and the table each fires on (None: not a trigger).
CHECKED = {
    "ghostsync.handle_new_user()": "auth.users",
    "ghostsync.handle_user_updated()": "auth.users",
    "ghostsync.write_profile(uuid,boolean)": None,
}


def test_the_signup_functions_pass_plpgsql_check(db):
    if not db.value("SELECT count(*) FROM pg_available_extensions WHERE name = 'plpgsql_check'"):
        pytest.skip(f"plpgsql_check is not installed for PostgreSQL {db.owner.major} on this machine "
                    "(Debian: postgresql-15-plpgsql-check)")
    db.upgrade()
    db.sql("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
    issues = {}
    for signature, table in CHECKED.items():
        rows = db.sql("SELECT plpgsql_check_function(%s::regprocedure, coalesce(%s::regclass, 0), format := 'json')",
                      (signature, table))
        found = [issue for (document,) in rows for issue in json.loads(document)["issues"]]
        if found:
            issues[signature] = found
    assert issues == {}
