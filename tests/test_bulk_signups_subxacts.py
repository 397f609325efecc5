"""A bulk write of more than 64 accounts in one transaction does not overflow the subtransaction cache
while the transaction runs.

Each profile write runs in an exception block: a subtransaction that writes gets an xid, and a backend
keeps at most 64 of them in its cache; past that every snapshot taken anywhere must consult pg_subtrans.
With per-row syncs firing at each INSERT, a transaction creating 100 accounts stayed overflowed from its
65th account to its end. ghostsync_0010's syncs are deferred to COMMIT: the transaction takes no
subtransaction before it commits (during the COMMIT itself the deferred syncs still write one
subtransaction each; docs/PERFORMANCE.md). pg_stat_get_backend_subxact() exists from PostgreSQL 16.
"""

from __future__ import annotations

import psycopg2
import pytest

from tests.seeding import failures, ghost_count

ACCOUNTS = 100

OWN_SUBXACTS = """
SELECT s.subxact_count, s.subxact_overflowed
FROM pg_stat_get_backend_idset() AS b(id), pg_stat_get_backend_subxact(b.id) AS s
WHERE pg_stat_get_backend_pid(b.id) = pg_backend_pid()
"""


def test_a_bulk_signup_transaction_does_not_overflow_the_subtransaction_cache(db):
    if db.owner.major < 16:
        pytest.skip("pg_stat_get_backend_subxact() exists from PostgreSQL 16 on")
    db.upgrade()
    conn = psycopg2.connect(db.url("supabase_admin"))
    try:
        with conn.cursor() as cur:
            for i in range(ACCOUNTS):
                cur.execute("INSERT INTO auth.users (instance_id, id, aud, role, email, created_at, updated_at, "
                            "is_sso_user, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000000', "
                            "gen_random_uuid(), 'authenticated', '', %s, now(), now(), false, false)",
                            (f"bulk{i}@example.com",))
            cur.execute(OWN_SUBXACTS)
            assert cur.fetchone() == (0, False)
        conn.commit()
    finally:
        conn.close()
    assert ghost_count(db) == 0 and failures(db) == []
