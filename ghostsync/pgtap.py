"""The pgTAP file ``export-supabase`` writes to ``supabase/tests/database/ghostsync.test.sql``.

``supabase test db`` runs every file under ``supabase/tests`` with ``pg_prove`` (psql,
``ON_ERROR_STOP``), after creating the ``pgtap`` extension in schema ``extensions``.
This file checks ghostsync on the team's own project, for the revision the database
is at (it carries what each revision declares, as the verification script does):

- ghostsync is installed (its row in ``public.alembic_version``) and there are no
  ghosts (auth users without a profile);
- no setting of the auth role or the database makes the auth service's writes skip
  ghostsync's triggers (``ghostsync.replication_role``, the query status runs);
- each trigger the revision declares exists on its table and is enabled;
- each function the revision declares matches it (text, volatility, strictness and
  language and SET clauses as ``ghostsync.drift`` compares them, SECURITY DEFINER, ``search_path = ''``)
  and is executable by neither ``anon`` nor ``authenticated``;
- a signup of each kind (email, phone, anonymous, SSO), made inside the test's
  transaction as the auth service makes it, goes through, gets its profile, and leaves
  no deferred constraint failing: ``SET CONSTRAINTS ALL IMMEDIATE`` runs before each
  signup and again after it, so nothing can hide behind the final rollback. ghostsync's
  own syncs (the constraint triggers the revision declares) are put back to DEFERRED in
  between: they run at that second SET, after the app's own triggers, as they run at
  COMMIT in production (ALL IMMEDIATE would run them in trigger-name order, before an
  app trigger whose name sorts after theirs).

Everything runs in one transaction that ends with ROLLBACK: the test leaves nothing
behind.
"""

from __future__ import annotations

from pathlib import Path

from ghostsync import __version__, drift, findings, names, replication_role
from ghostsync.verify import declarations, embedded

REPLICATION_TEST = ("no setting of the auth role or the database makes the auth service's writes skip "
                    "ghostsync's triggers")

SIGNUP_KINDS = ("email", "phone", "anonymous", "sso")
TESTS_PER_SIGNUP = 3

# The auth service's INSERT for each kind of signup (the columns GoTrue writes), for id %1$L.
SIGNUPS = {
    "email": ("a user signing up with an email address",
              "email, email_confirmed_at, is_sso_user, is_anonymous, raw_app_meta_data",
              "'ghostsync-test-' || %1$L || '@example.invalid', NULL, false, false, "
              "'{\"provider\": \"email\", \"providers\": [\"email\"]}'"),
    "phone": ("a user signing up with a phone number",
              "phone, is_sso_user, is_anonymous, raw_app_meta_data",
              "'1999' || pg_catalog.translate(pg_catalog.left(%1$L, 8), 'abcdef', '123456'), false, false, "
              "'{\"provider\": \"phone\", \"providers\": [\"phone\"]}'"),
    "anonymous": ("an anonymous sign-in", "is_sso_user, is_anonymous, raw_app_meta_data", "false, true, '{}'"),
    "sso": ("a SAML SSO signup",
            "email, email_confirmed_at, is_sso_user, is_anonymous, raw_app_meta_data",
            "'ghostsync-test-' || %1$L || '@example.invalid', pg_catalog.now(), true, false, "
            "'{\"provider\": \"sso:00000000-0000-0000-0000-000000000001\", \"providers\": "
            "[\"sso:00000000-0000-0000-0000-000000000001\"]}'"),
}

TEMPLATE = """-- ghostsync's database tests (ghostsync {version}; written by `ghostsync export-supabase`).
-- Run with `supabase test db` (pg_prove). Checks the revision the database is at; leaves nothing
-- behind (one transaction, rolled back). Re-export it when ghostsync is upgraded.
BEGIN;

CREATE TEMP TABLE ghostsync_expected (revision text, declared jsonb, bodies jsonb) ON COMMIT DROP;
CREATE TEMP TABLE ghostsync_signups ON COMMIT DROP AS
  SELECT k.kind, pg_catalog.gen_random_uuid()::text AS id
  FROM (VALUES {kinds}) AS k(kind);

DO $ghostsync_test$
DECLARE
  d jsonb := $ghostsync_declared${declared}$ghostsync_declared$::jsonb;
  at text;
BEGIN
  IF pg_catalog.to_regclass('{version_table}') IS NOT NULL THEN
    EXECUTE 'SELECT min(version_num::text) FROM {version_table} WHERE version_num::text = ANY ($1)'
      INTO at USING ARRAY(SELECT pg_catalog.jsonb_array_elements_text(d -> 'members'));
    IF at IS NULL THEN  -- only a host's row: the newest revision of the branch it holds through depends_on
      EXECUTE 'SELECT m.v FROM pg_catalog.jsonb_array_elements_text($1 -> ''members'') WITH ORDINALITY AS m(v, n) '
              'WHERE m.v IN (SELECT $1 -> ''holds'' ->> version_num::text FROM {version_table}) '
              'ORDER BY m.n DESC LIMIT 1'
        INTO at USING d;
    END IF;
  END IF;
  INSERT INTO ghostsync_expected VALUES (at, d -> 'revisions' -> coalesce(at, ''), d -> 'bodies');
END
$ghostsync_test$;

SELECT plan(3 + pg_catalog.jsonb_array_length(declared -> 'triggers')
            + 3 * pg_catalog.jsonb_array_length(declared -> 'functions') + {signup_tests})
FROM ghostsync_expected;

SELECT ok(revision IS NOT NULL, 'ghostsync is installed: ' || coalesce(revision, 'no revision of its branch in '
          || '{version_table}'))
FROM ghostsync_expected;

SELECT is((SELECT count(*) FROM auth.users AS u
           WHERE NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = u.id)),
          0::bigint, 'no ghosts: every auth.users row has its public.users profile');

SELECT is((SELECT q.j FROM ({replication}) AS q), '[]', {replication_test});

SELECT ok(coalesce((SELECT t.tgenabled IN ('O', 'A') FROM pg_catalog.pg_trigger AS t
                    WHERE t.tgrelid = pg_catalog.to_regclass(x.t ->> 1) AND t.tgname = x.t ->> 0
                      AND NOT t.tgisinternal), false),
          pg_catalog.format('trigger %s on %s exists and is enabled', x.t ->> 0, x.t ->> 1))
FROM ghostsync_expected AS e
CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(e.declared -> 'triggers') AS x(t);

SELECT ok(c.pass, c.description)
FROM ghostsync_expected AS e
CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(e.declared -> 'functions') AS x(f)
CROSS JOIN LATERAL pg_catalog.to_regprocedure(x.f ->> 0) AS fn(oid)
CROSS JOIN LATERAL (VALUES
  (coalesce((SELECT p.prosrc = e.bodies ->> ((x.f ->> 1)::int) AND p.prosecdef
                    AND {search_path_pinned}
                    AND pg_catalog.cardinality({attribute_differences}) = 0
             FROM (SELECT q.*, l.lanname FROM pg_catalog.pg_proc AS q
                   JOIN pg_catalog.pg_language AS l ON l.oid = q.prolang) AS p WHERE p.oid = fn.oid), false),
   pg_catalog.format('function %s matches revision %s', x.f ->> 0, e.revision)),
  (NOT coalesce(pg_catalog.has_function_privilege('anon', fn.oid, 'EXECUTE'), true),
   pg_catalog.format('function %s is not executable by anon', x.f ->> 0)),
  (NOT coalesce(pg_catalog.has_function_privilege('authenticated', fn.oid, 'EXECUTE'), true),
   pg_catalog.format('function %s is not executable by authenticated', x.f ->> 0))
) AS c(pass, description);
{signups}
SELECT * FROM finish();
ROLLBACK;
"""

SIGNUP = """
-- {what}
SET CONSTRAINTS ALL IMMEDIATE;
DO $ghostsync_deferred$
DECLARE
  sync record;
BEGIN
  FOR sync IN SELECT c.conname FROM pg_catalog.pg_constraint AS c
              WHERE c.conrelid = 'auth.users'::pg_catalog.regclass AND c.contype = 't'
                AND c.condeferrable
                AND c.conname::text IN (SELECT x.t ->> 0 FROM ghostsync_expected AS e
                                        CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(e.declared -> 'triggers')
                                          AS x(t))
  LOOP
    EXECUTE pg_catalog.format('SET CONSTRAINTS auth.%I DEFERRED', sync.conname);
  END LOOP;
END
$ghostsync_deferred$;
SELECT lives_ok(pg_catalog.format($ghostsync_signup$
  INSERT INTO auth.users (instance_id, id, aud, role, {columns}, confirmation_token, recovery_token,
                          email_change_token_new, email_change, raw_user_meta_data, created_at, updated_at)
  VALUES ('00000000-0000-0000-0000-000000000000', %1$L, 'authenticated', 'authenticated', {values}, '', '', '', '',
          '{{}}', pg_catalog.now(), pg_catalog.now())
$ghostsync_signup$, s.id), '{kind} signup goes through')
FROM ghostsync_signups AS s WHERE s.kind = '{kind}';
SELECT lives_ok('SET CONSTRAINTS ALL IMMEDIATE', 'no deferred constraint fails after the {kind} signup');
SELECT ok(EXISTS (SELECT 1 FROM public.users AS p JOIN auth.users AS u ON u.id = p.id
                  WHERE p.id = s.id::uuid AND p.email IS NOT DISTINCT FROM u.email),
          'the {kind} signup got its profile')
FROM ghostsync_signups AS s WHERE s.kind = '{kind}';
"""


def script(config: str | Path | None = None, version_table: str = names.VERSION_TABLE) -> str:
    """The pgTAP file for the chain of ``config`` (default: ghostsync's own), reading ``version_table``."""
    payload = embedded(declarations(config))
    signups = "".join(
        SIGNUP.format(what=SIGNUPS[kind][0], columns=SIGNUPS[kind][1], values=SIGNUPS[kind][2], kind=kind)
        for kind in SIGNUP_KINDS)
    return TEMPLATE.format(version=__version__, kinds=", ".join(f"('{k}')" for k in SIGNUP_KINDS),
                           declared=payload, signup_tests=len(SIGNUP_KINDS) * TESTS_PER_SIGNUP, signups=signups,
                           version_table=version_table,
                           attribute_differences=drift.attribute_differences_sql("p", "x.f -> 3"),
                           search_path_pinned=drift.search_path_pinned_sql("p.proconfig"),
                           replication=replication_role.QUERY,
                           replication_test=findings.sql_literal(REPLICATION_TEST))


__all__ = ["SIGNUP_KINDS", "script"]
