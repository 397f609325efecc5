"""A fingerprint of what ghostsync installs, read from the catalogs, to compare two databases."""

from __future__ import annotations

from typing import Any

TABLES = ("public.users", "public.cleanup_audit_log", "ghostsync.sync_failures")


def fingerprint(db) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in TABLES:
        out[f"{table} columns"] = db.sql(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        out[f"{table} constraints"] = db.sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "ORDER BY conname",
            (table,),
        )
        out[f"{table} security"] = db.sql(
            "SELECT relrowsecurity, relowner::regrole::text, relacl::text FROM pg_class WHERE oid = %s::regclass",
            (table,),
        )
    out["functions"] = db.sql(
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.prosecdef, p.proconfig, p.proacl::text,"
        " p.proowner::regrole::text FROM pg_proc p WHERE p.pronamespace IN ('public'::regnamespace,"
        " 'ghostsync'::regnamespace) ORDER BY 1"
    )
    out["register"] = db.sql("SELECT kind, name, created, owner FROM ghostsync.objects ORDER BY 1, 2")
    out["ghostsync tables"] = db.sql(
        "SELECT c.relname, c.relrowsecurity, c.relacl::text FROM pg_class c "
        "WHERE c.relnamespace = 'ghostsync'::regnamespace ORDER BY 1")
    out["triggers"] = db.sql(
        "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger "
        "WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal ORDER BY tgname"
    )
    out["version"] = db.sql("SELECT version_num FROM public.alembic_version")
    return out


def trigger_definitions(db, table: str = "auth.users") -> dict[str, str]:
    """Every non-internal trigger on ``table``: name -> pg_get_triggerdef under an empty search_path,
    the form a revision declares."""
    import psycopg2

    conn = psycopg2.connect(db.url("supabase_admin"))
    try:
        with conn.cursor() as cur:
            cur.execute("SET search_path = ''")
            cur.execute("SELECT tgname::text, pg_catalog.pg_get_triggerdef(oid) FROM pg_catalog.pg_trigger "
                        "WHERE tgrelid = %s::pg_catalog.regclass AND NOT tgisinternal", (table,))
            return dict(cur.fetchall())
    finally:
        conn.close()
