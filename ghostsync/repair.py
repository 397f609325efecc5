"""Retry the profile writes recorded in ghostsync.sync_failures.

For each recorded user, in its own short transaction: if the auth user
exists, write its profile from auth.users (insert, or update email,
email_verified and deleted_at); if it is gone, delete the profile. When the
write succeeds, the failure record is cleared, unless a newer failure for the
same user was recorded meanwhile. When it fails again, the record stays and
carries the new error. Each run is one cleanup_audit_log row, job_name
``repair_failed_syncs``. Running it twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ghostsync import health
from ghostsync.audit import finish_run, start_run
from ghostsync.models import auth_users, profiles, sync_failures

JOB_NAME = "repair_failed_syncs"


@dataclass
class RepairResult:
    run_id: int
    repaired: int = 0
    still_failing: int = 0
    errors: list[str] = field(default_factory=list)


def _profile_upsert(user_id: Any) -> Any:
    source = select(
        auth_users.c.id,
        auth_users.c.email,
        auth_users.c.email_confirmed_at.is_not(None),
        auth_users.c.deleted_at,
        func.coalesce(auth_users.c.created_at, func.now()),
        func.now(),
    ).where(auth_users.c.id == user_id)
    stmt = pg_insert(profiles).from_select(
        ["id", "email", "email_verified", "deleted_at", "created_at", "updated_at"], source
    )
    return stmt.on_conflict_do_update(
        index_elements=[profiles.c.id],
        set_={
            "email": stmt.excluded.email,
            "email_verified": stmt.excluded.email_verified,
            "deleted_at": stmt.excluded.deleted_at,
            "updated_at": func.now(),
        },
    )


def _repair_one(conn: Connection, user_id: Any) -> None:
    if conn.execute(select(exists().where(auth_users.c.id == user_id))).scalar_one():
        conn.execute(_profile_upsert(user_id))
    else:
        conn.execute(delete(profiles).where(profiles.c.id == user_id))


def repair_failed_syncs(conn: Connection, *, limit: int | None = None) -> RepairResult:
    """Retry every recorded failure (or the oldest ``limit``).

    ``conn`` is an ordinary connection with no transaction begun; each user is
    repaired in a transaction of its own.
    """
    run_id = start_run(conn, JOB_NAME, {"mode": "cli"})
    result = RepairResult(run_id=run_id)
    query = select(sync_failures.c.user_id, sync_failures.c.last_failed_at).order_by(
        sync_failures.c.last_failed_at
    )
    if limit is not None:
        query = query.limit(limit)
    with conn.begin():
        pending = conn.execute(query).all()
    try:
        for user_id, failed_at in pending:
            try:
                with conn.begin():
                    _repair_one(conn, user_id)
                    conn.execute(
                        delete(sync_failures).where(
                            sync_failures.c.user_id == user_id,
                            sync_failures.c.last_failed_at == failed_at,
                        )
                    )
                result.repaired += 1
            except DBAPIError as exc:
                result.still_failing += 1
                sqlstate = getattr(exc.orig, "pgcode", None) or "XX000"
                diag = getattr(exc.orig, "diag", None)
                message = str(getattr(diag, "message_primary", None) or exc.orig)
                result.errors.append(f"{user_id}: {sqlstate} {message}")
                with conn.begin():
                    conn.execute(
                        update(sync_failures)
                        .where(sync_failures.c.user_id == user_id)
                        .values(sqlstate=sqlstate, message=f"repair failed: {message}")
                    )
    except BaseException as exc:
        finish_run(conn, run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                   result.repaired, {"error": f"{type(exc).__name__}: {exc}"[:2000]}, quiet=True)
        raise
    status = "succeeded" if result.still_failing == 0 else "partial"
    finish_run(conn, run_id, status, result.repaired,
               {"still_failing": result.still_failing, "errors": result.errors[:20]})
    return result


def fix_stale_profiles(conn: Connection) -> int:
    """Bring every stale profile's email, email_verified and deleted_at in line with auth.users.

    One statement in its own transaction; stale profiles are few when the
    update trigger is installed (they come from edits made while it was not).
    """
    verified = auth_users.c.email_confirmed_at.is_not(None)
    stale = (
        update(profiles)
        .where(
            profiles.c.id == auth_users.c.id,
            health.stale_condition() | profiles.c.deleted_at.is_distinct_from(auth_users.c.deleted_at),
        )
        .values(email=auth_users.c.email, email_verified=verified, deleted_at=auth_users.c.deleted_at,
                updated_at=func.now())
    )
    with conn.begin():
        return int(conn.execute(stale).rowcount or 0)
