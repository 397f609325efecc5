"""What PostgreSQL lets ``postgres`` do to a trigger on auth.users with the TRIGGER privilege alone.

Today's Supabase roles without supautils (role setup "current"): ``postgres`` is not the owner of
auth.users (supabase_auth_admin is) and not a member of its role, but holds TRIGGER on it. ghostsync_0010
and ghostsync_0011 are written around these facts; this test measures them on every server version.
"""

from __future__ import annotations

import psycopg2
import pytest

from ghostsync.testing.fixtures import supabase_database

FUNCTION = ("CREATE FUNCTION public.privilege_probe() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NULL; END $$")

# (statement, allowed to postgres with the TRIGGER privilege alone)
MEASURED = (
    ("CREATE TRIGGER probe_plain AFTER INSERT ON auth.users FOR EACH ROW "
     "EXECUTE FUNCTION public.privilege_probe()", True),
    ("CREATE OR REPLACE TRIGGER probe_plain AFTER INSERT ON auth.users FOR EACH ROW WHEN (false) "
     "EXECUTE FUNCTION public.privilege_probe()", True),
    ("CREATE CONSTRAINT TRIGGER probe_deferred AFTER INSERT ON auth.users DEFERRABLE INITIALLY DEFERRED "
     "FOR EACH ROW EXECUTE FUNCTION public.privilege_probe()", True),
    # the grammar has no CREATE OR REPLACE CONSTRAINT TRIGGER; a constraint trigger cannot be replaced
    # by a plain one either (whoever asks)
    ("CREATE OR REPLACE TRIGGER probe_deferred AFTER INSERT ON auth.users FOR EACH ROW "
     "EXECUTE FUNCTION public.privilege_probe()", False),
    ("CREATE OR REPLACE TRIGGER probe_plain AFTER INSERT ON auth.users DEFERRABLE INITIALLY DEFERRED "
     "FOR EACH ROW EXECUTE FUNCTION public.privilege_probe()", False),
    ("DROP TRIGGER probe_plain ON auth.users", False),
    ("DROP TRIGGER probe_deferred ON auth.users", False),
    ("DROP TRIGGER IF EXISTS probe_absent ON auth.users", True),
    ("ALTER TABLE auth.users DISABLE TRIGGER probe_deferred", False),
    ("ALTER TABLE auth.users DISABLE TRIGGER probe_plain", False),
    ("ALTER TRIGGER probe_deferred ON auth.users RENAME TO probe_renamed", False),
    ("SET CONSTRAINTS auth.probe_deferred IMMEDIATE", True),
)


def attempt(url: str, statement: str) -> str | None:
    """None when ``statement`` succeeds as that role, else its SQLSTATE and message's first line."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        conn.commit()
        return None
    except psycopg2.Error as exc:
        conn.rollback()
        return f"{exc.pgcode} {str(exc).splitlines()[0]}"
    finally:
        conn.close()


def test_what_the_trigger_privilege_allows_without_supautils(pg, supabase_servers):
    with supabase_database(supabase_servers.get(pg.major, "current")) as db:
        db.sql(FUNCTION)
        db.sql("GRANT EXECUTE ON FUNCTION public.privilege_probe() TO postgres")
        assert db.value("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'auth.users'::regclass") \
            == "supabase_auth_admin"
        assert db.value("SELECT has_table_privilege('postgres', 'auth.users', 'TRIGGER')") is True
        assert db.value("SELECT pg_has_role('postgres', 'supabase_auth_admin', 'USAGE')") is False
        outcomes = {statement: attempt(db.url("postgres"), statement) for statement, _ in MEASURED}
        print("\n".join(f"{'allowed' if o is None else 'refused'}: {s}  [{o or ''}]" for s, o in outcomes.items()))
        assert {s: outcomes[s] is None for s, _ in MEASURED} == dict(MEASURED)
        # every refusal of a DROP/ALTER is the owner check, not a missing object
        for statement, allowed in MEASURED:
            if not allowed and statement.startswith(("DROP", "ALTER")):
                assert (outcomes[statement] or "").startswith("42501 must be owner of"), outcomes[statement]
        # what stayed: the plain trigger neutralised in place, the constraint trigger as created
        assert db.value("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'probe_plain'").endswith(
            "WHEN (false) EXECUTE FUNCTION privilege_probe()")
        assert db.value("SELECT tgdeferrable AND tginitdeferred FROM pg_trigger WHERE tgname = 'probe_deferred'")


@pytest.mark.parametrize("roles", ("membership", "hosted"))
def test_the_owners_way_and_supautils_drop_a_constraint_trigger(pg, supabase_servers, roles):
    with supabase_database(supabase_servers.get(pg.major, roles)) as db:
        db.sql(FUNCTION)
        db.sql("GRANT EXECUTE ON FUNCTION public.privilege_probe() TO postgres")
        create = MEASURED[2][0]
        assert attempt(db.url("postgres"), create) is None
        assert attempt(db.url("postgres"), "DROP TRIGGER probe_deferred ON auth.users") is None
