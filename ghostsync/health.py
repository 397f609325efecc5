"""Health figures: ghosts, orphans, stale profiles, failed syncs, audit history.

Each check is one query and returns plain values, so the demo, the tests,
``status`` and ``repair`` read the same figures. Which columns make a
profile stale comes from the declaration of the revision the database is at
(``ghostsync.sync``), never from a list kept here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, bindparam, exists, func, select, text
from sqlalchemy.engine import Connection

from ghostsync import sync
from ghostsync.chain import Declared
from ghostsync.models import audit_log, auth_users, profiles, sync_failures


@dataclass(frozen=True)
class Counts:
    """The full check's figures, from one full join of the two tables on their keys."""

    auth_users: int
    profiles: int
    ghosts: int
    orphans: int
    stale: int


def full_counts(conn: Connection, declared: Declared) -> Counts:
    """The full check's one statement over both tables.

    Inside a transaction (``status`` runs one), JIT compilation is turned off for it: the
    statement runs once a check, so compiling it can only add to that check (PostgreSQL 15,
    1M users: 7 ms of JIT, no difference measurable; docs/PERFORMANCE.md)."""
    if conn.in_transaction():
        conn.execute(text("SET LOCAL jit = off"))
    row = conn.execute(text(full_counts_sql(declared))).one()
    return Counts(*(int(v) for v in row))


def full_counts_sql(declared: Declared) -> str:
    """The full check's statement: one row, its columns named as ``Counts``'s fields, in their order
    (``ghostsync verify-sql`` embeds it too). A profile row with a NULL id (an adopted table whose key is
    a UNIQUE index allows one) is neither a ghost nor an orphan."""
    return (
        "SELECT count(u.id) AS auth_users, count(p.id) AS profiles,\n"
        "       count(*) FILTER (WHERE p.id IS NULL AND u.id IS NOT NULL) AS ghosts,\n"
        "       count(*) FILTER (WHERE u.id IS NULL AND p.id IS NOT NULL) AS orphans,\n"
        "       count(*) FILTER (WHERE u.id IS NOT NULL AND p.id IS NOT NULL AND "
        f"{sync.stale_condition(declared)}) AS stale\n"
        "FROM auth.users AS u FULL JOIN public.users AS p ON p.id = u.id"
    )


def ghosts_query(within: timedelta | None = None) -> Any:
    """Auth users without a profile; with ``within``, only those created that recently (server clock)."""
    query = (
        select(func.count())
        .select_from(auth_users)
        .where(~exists().where(profiles.c.id == auth_users.c.id))
    )
    if within is not None:
        query = query.where(auth_users.c.created_at >= func.now() - bindparam("within", within, type_=Interval))
    return query


def count_ghosts(conn: Connection, within: timedelta | None = None) -> int:
    return int(conn.execute(ghosts_query(within)).scalar_one())


def any_ghost(conn: Connection) -> bool:
    """Whether one auth user has no profile (stops at the first)."""
    return bool(conn.execute(select(exists().where(~exists().where(profiles.c.id == auth_users.c.id))
                                    .select_from(auth_users))).scalar())


@dataclass(frozen=True)
class BeforeInstall:
    """What a database without ghostsync already shows: its auth users and the ghosts among them."""

    auth_users: int
    ghosts: int

    def sentence(self) -> str:
        return f"{self.ghosts} of {self.auth_users} auth user(s) have no profile (ghosts)"


def before_install(conn: Connection) -> BeforeInstall | None:
    """The ghosts of a database ghostsync is not installed in: every auth user when there is no
    public.users, else those without a profile of their id in the app's own table (which the install
    adopts). None where it cannot be told: no auth.users, or a public.users without a uuid ``id``
    (which the install would refuse to adopt anyway)."""
    tables = conn.execute(text(
        "SELECT to_regclass('auth.users') IS NOT NULL, to_regclass('public.users') IS NOT NULL, "
        "EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('public.users') AND attname = 'id' "
        "AND atttypid = 'uuid'::regtype AND NOT attisdropped)"
    )).one()
    if not tables[0]:
        return None
    if not tables[1]:
        total = count_auth_users(conn)
        return BeforeInstall(auth_users=total, ghosts=total)
    if not tables[2]:
        return None
    total, ghosts = conn.execute(text(
        "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM public.users AS p WHERE p.id = u.id)) "
        "FROM auth.users AS u"
    )).one()
    return BeforeInstall(auth_users=int(total), ghosts=int(ghosts))


def count_orphans(conn: Connection) -> int:
    """Profiles whose auth user is gone (a NULL id, which an adopted table's key may allow, is no account's)."""
    query = select(func.count()).select_from(profiles).where(profiles.c.id.is_not(None),
                                                             ~exists().where(auth_users.c.id == profiles.c.id))
    return int(conn.execute(query).scalar_one())


def count_failed_syncs(conn: Connection, declared: Declared | None = None) -> int:
    """Recorded profile writes that failed (ghostsync.sync_failures); with ``declared``, only those whose
    profile still differs from its account (``failed_syncs_sql``)."""
    if declared is None:
        return int(conn.execute(select(func.count()).select_from(sync_failures)).scalar_one())
    return int(conn.execute(text(failed_syncs_sql(declared))).scalar_one())


def failed_syncs_sql(declared: Declared) -> str:
    """The ledger's rows that still stand, as one row, one column ``rows``: a row whose profile now equals
    its account (the update sync has since healed it) is not counted, so status does not stay unhealthy
    until someone runs repair, and the signup path writes nothing more (``ghostsync verify-sql`` embeds
    it too). The ledger is small (one row per failing user): the join costs the quick check nothing."""
    return (
        "SELECT count(*) AS rows FROM ghostsync.sync_failures AS f\n"
        "WHERE NOT EXISTS (SELECT 1 FROM auth.users AS u JOIN public.users AS p ON p.id = u.id\n"
        f"                  WHERE u.id = f.user_id AND NOT {sync.stale_condition(declared)})"
    )


def last_runs(conn: Connection, job_name: str, limit: int = 5) -> list[dict[str, Any]]:
    """The newest audit rows of ``job_name``, newest first (dry runs left out)."""
    query = (
        select(audit_log)
        .where(audit_log.c.job_name == job_name, audit_log.c.status != "dry_run")
        .order_by(audit_log.c.id.desc())
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def profile_of(conn: Connection, user_id: Any) -> dict[str, Any] | None:
    row = conn.execute(text("SELECT * FROM public.users WHERE id = CAST(:id AS uuid)"),
                       {"id": str(user_id)}).mappings().first()
    return dict(row) if row is not None else None


def count_profiles(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(profiles)).scalar_one())


def count_auth_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(auth_users)).scalar_one())
