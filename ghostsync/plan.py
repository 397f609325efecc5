"""What a downgrade would remove, computed with Alembic's public API before Alembic runs it.

``downgrade_plan`` asks the chain what Alembic's own ``downgrade`` would run
(``ScriptDirectory.iterate_revisions(heads, destination,
select_for_downgrade=True)``, the call Alembic makes) and sorts the revisions
it would remove into ghostsync's branch (a host's follow-ups on it included)
and the host's own. ``host_refusal`` is the one line ``ghostsync migrate``
prints instead of running a downgrade that would take ghostsync's revisions
down together with the host revisions that depend on them (a host revision
that ``depends_on`` a ghostsync revision goes first, and its downgrade drops
its tables with their rows); it names those host revisions and the rollback that leaves them in place,
checked against the same plan. ``drops_auth_triggers`` says whether the
migrating role must be able to drop ghostsync's triggers on auth.users.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from ghostsync import chain


class NoPlan(RuntimeError):
    """Alembic cannot plan this downgrade either; it says why when it runs."""


@dataclass(frozen=True)
class DowngradePlan:
    """The revisions a downgrade would remove, in the order Alembic would downgrade them."""

    removed: tuple[str, ...]
    ghostsync: tuple[str, ...]
    host: tuple[str, ...]
    drops_auth_triggers: bool


def downgrade_plan(script: ScriptDirectory, heads: tuple[str, ...], destination: str) -> DowngradePlan:
    """What ``downgrade destination`` from ``heads`` (the database's alembic_version rows) removes."""
    try:
        removed = list(script.iterate_revisions(heads, destination, select_for_downgrade=True))
    except (RevisionError, CommandError) as exc:
        raise NoPlan(str(exc)) from None
    members = chain.branch_revisions(script)
    ours = tuple(rev.revision for rev in removed if rev.revision in members)
    return DowngradePlan(
        removed=tuple(rev.revision for rev in removed),
        ghostsync=ours,
        host=tuple(rev.revision for rev in removed if rev.revision not in members),
        # host revisions may carry a DECLARES of their own: only those on ghostsync's branch name triggers
        drops_auth_triggers=any(chain.declaration(members[rev]).triggers for rev in ours),
    )


def host_refusal(script: ScriptDirectory, heads: tuple[str, ...], plan: DowngradePlan, command: str) -> str | None:
    """The line that refuses ``plan`` when it takes down host revisions that depend on the ghostsync
    revisions it removes, else None.

    ``command`` is how the user runs ``ghostsync migrate`` (options included), for the advice. A
    downgrade of the host's revisions alone (``app@base``, the host's own ``-1``) is the host's call
    and passes.
    """
    removed = set(plan.ghostsync)
    # the host revisions that hold a ghostsync revision this downgrade removes (depends_on, or below them)
    dependents = [rev for rev in plan.host if removed & set(chain.standing(script, [rev]))]
    if not dependents:
        return None
    going = ", ".join(dependents)
    head = (f"refusing to downgrade: it would also downgrade the host's revision(s) {going}, "
            "dropping what they created, rows included, because they depend on ghostsync's")
    lowest = chain.standing(script, dependents)
    if len(lowest) != 1:
        return f"{head}; ghostsync cannot go below what they depend on; nothing was downgraded"
    floor = lowest[0]
    instead = f"ghostsync@{floor}"
    try:
        advised = downgrade_plan(script, heads, instead)
    except NoPlan:
        advised = None
    if advised is not None and advised.removed and not advised.host:
        return (f"{head}; to roll ghostsync back alone and keep them, run `{command} downgrade {instead}`; "
                "nothing was downgraded")
    return (f"{head}; ghostsync is already as far down as they allow ({floor}, on which they depend); "
            "nothing was downgraded")


# Whether the migrating role may drop a trigger on auth.users: as its owner (or a member of the
# owner's role, the older Supabase projects), as a superuser, or through supautils'
# drop_trigger_grants (today's hosted Supabase).
CAN_DROP_AUTH_TRIGGERS = """
SELECT r.rolsuper
    OR pg_has_role(current_user, c.relowner, 'USAGE')
    OR coalesce(nullif(current_setting('supautils.drop_trigger_grants', true), '')::jsonb
                -> current_user::text ? 'auth.users', false),
       pg_get_userbyid(c.relowner), current_user
FROM pg_class AS c, pg_roles AS r
WHERE c.oid = to_regclass('auth.users') AND r.rolname = current_user
"""


def trigger_refusal(row: tuple[object, ...] | None) -> str | None:
    """The line that refuses a downgrade dropping ghostsync's auth.users triggers, from
    ``CAN_DROP_AUTH_TRIGGERS``'s row; None when the role may drop them (or there is no auth.users)."""
    if row is None or row[0]:
        return None
    return (
        f"cannot drop ghostsync's triggers on auth.users: role {row[2]} is not their owner ({row[1]}) "
        "and this database does not let it drop them; hosted Supabase allows it through supautils "
        "(supautils.drop_trigger_grants); here run the downgrade as the owner or a superuser (DATABASE_URL of "
        "supabase_admin); nothing was downgraded"
    )


__all__ = ["CAN_DROP_AUTH_TRIGGERS", "DowngradePlan", "NoPlan", "downgrade_plan", "host_refusal", "trigger_refusal"]
