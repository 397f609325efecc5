"""Health checks: ghosts, orphans, stale profiles, triggers, audit history.

Each check is one query built from ``ghostsync.models`` and returns plain
values, so the demo, the tests and the command line read the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, and_, bindparam, exists, func, or_, select
from sqlalchemy.engine import Connection

from ghostsync.models import audit_log, auth_users, profiles, sync_failures

TRIGGER_NAMES = ("on_auth_user_created",)


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


def count_orphans(conn: Connection) -> int:
    """Profiles whose auth user is gone."""
    query = (
        select(func.count())
        .select_from(profiles)
        .where(~exists().where(auth_users.c.id == profiles.c.id))
    )
    return int(conn.execute(query).scalar_one())


def count_failed_syncs(conn: Connection) -> int:
    """Recorded profile writes that failed (ghostsync.sync_failures)."""
    return int(conn.execute(select(func.count()).select_from(sync_failures)).scalar_one())


def stale_condition() -> Any:
    """A profile (joined to its auth user) whose email or email_verified disagrees with auth.users."""
    return or_(
        profiles.c.email.is_distinct_from(auth_users.c.email),
        profiles.c.email_verified.is_distinct_from(auth_users.c.email_confirmed_at.is_not(None)),
    )


def count_stale(conn: Connection) -> int:
    query = (
        select(func.count())
        .select_from(profiles.join(auth_users, auth_users.c.id == profiles.c.id))
        .where(stale_condition())
    )
    return int(conn.execute(query).scalar_one())


def full_counts(conn: Connection) -> tuple[int, int, int]:
    """Ghosts, orphans and stale profiles in one full join over the two primary keys."""
    joined = auth_users.outerjoin(profiles, profiles.c.id == auth_users.c.id, full=True)
    row = conn.execute(
        select(
            func.count().filter(profiles.c.id.is_(None)),
            func.count().filter(auth_users.c.id.is_(None)),
            func.count().filter(and_(auth_users.c.id.is_not(None), profiles.c.id.is_not(None), stale_condition())),
        ).select_from(joined)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


@dataclass(frozen=True)
class TriggerState:
    name: str
    exists: bool
    enabled: bool
    function: str | None


def trigger_states(conn: Connection, names: tuple[str, ...] = TRIGGER_NAMES) -> list[TriggerState]:
    """Whether each ghostsync trigger on auth.users exists and fires (tgenabled 'O' or 'A')."""
    rows = conn.exec_driver_sql(
        "SELECT t.tgname, t.tgenabled, p.oid::regprocedure::text "
        "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = to_regclass('auth.users') AND NOT t.tgisinternal"
    ).all()
    found = {row[0]: row for row in rows}
    states = []
    for name in names:
        row = found.get(name)
        states.append(
            TriggerState(
                name=name,
                exists=row is not None,
                enabled=row is not None and row[1] in ("O", "A"),
                function=row[2] if row is not None else None,
            )
        )
    return states


def last_runs(conn: Connection, job_name: str, limit: int = 5) -> list[dict[str, Any]]:
    """The newest audit rows of ``job_name``, newest first."""
    query = (
        select(audit_log)
        .where(audit_log.c.job_name == job_name)
        .order_by(audit_log.c.id.desc())
        .limit(limit)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def profile_of(conn: Connection, user_id: Any) -> dict[str, Any] | None:
    row = conn.execute(select(profiles).where(profiles.c.id == user_id)).first()
    return dict(row._mapping) if row is not None else None


def count_profiles(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(profiles)).scalar_one())


def count_auth_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(auth_users)).scalar_one())

