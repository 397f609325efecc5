"""Whether public.users lets one end user read another's row: the one home of that heuristic.

ghostsync never adds a column carrying auth data (an email) to a table other
users can read. A table is taken as readable by other users ("exposed") when an
end users' role (``anon``, ``authenticated``, or PUBLIC) may SELECT from it
(table or column privilege) and either row level security is off, or a
permissive SELECT (or ALL) policy for that role has a USING expression whose
text does not compare ``auth.uid()`` for equality (``auth.uid() = id``,
``id = (SELECT auth.uid())``), i.e. does not restrict a reader to rows keyed by
their own id: ``auth.uid() IS NOT NULL`` (every signed-in user) is open. A
heuristic: an equality on ``auth.uid()`` that still lets others through (a
team's rows, ``... OR true``) counts as private; the README says so.

``EXPOSED`` is a boolean SQL expression (NULL where public.users is not a
table), used by revision 0001's adoption, by ``kit.column_sql`` (no column is
added to an exposed table) and by ``ghostsync status``, which says why a synced
column is absent. ``open_policy`` is the policy half of the heuristic, which
status's warning about readable synced columns (``ghostsync.exposure``) applies
column by column: one statement of "other users can read this table", here.
"""

from __future__ import annotations

# A permissive SELECT (or ALL) policy of table ``{table}`` (a pg_class row) that applies to PUBLIC or to the role
# ``{listed}`` says is listed, and does not restrict rows to the reader's own (its USING does not mention
# auth.uid() in an equality, as pg_get_expr prints it: ``auth.uid() = x``, ``( SELECT auth.uid() AS uid) = x``,
# ``x = auth.uid()``, ``x = ( SELECT auth.uid() AS uid)``): the heuristic's one statement, used by EXPOSED and
# by status's column-level query.
OPEN_POLICY = r"""p.polrelid = {table}.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
          AND (0::oid = ANY (p.polroles)
               OR {listed})
          AND p.polqual IS NOT NULL
          AND pg_catalog.pg_get_expr(p.polqual, p.polrelid)
              !~ '(auth\.uid\(\)( AS uid\))? = |= (\( SELECT )?auth\.uid\(\))'"""


def open_policy(table: str, listed: str) -> str:
    """``OPEN_POLICY`` over ``p`` (pg_policy) for the pg_class row ``table``; ``listed``: an SQL boolean, whether
    the reader's role is in ``p.polroles``."""
    return OPEN_POLICY.format(table=table, listed=listed)


# whether role r.name (anon, authenticated, or PUBLIC) is among a policy's roles
_LISTED = "(r.name <> 'public' AND pg_catalog.to_regrole(r.name) = ANY (p.polroles))"
EXPOSED = r"""(SELECT EXISTS (
    SELECT 1 FROM (VALUES ('anon'), ('authenticated'), ('public')) AS r(name)
    WHERE (r.name = 'public' OR pg_catalog.to_regrole(r.name) IS NOT NULL)
      AND pg_catalog.has_any_column_privilege(r.name, c.oid, 'SELECT')
      AND (NOT c.relrowsecurity OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_policy AS p
        WHERE """ + open_policy("c", _LISTED) + r""")))
  FROM pg_catalog.pg_class AS c
  WHERE c.oid = pg_catalog.to_regclass('public.users') AND c.relkind IN ('r', 'p'))"""

WHY = ("readable by other users (row level security off with SELECT granted to anon, authenticated or PUBLIC, "
       "or a permissive SELECT policy whose USING does not compare auth.uid() for equality)")
"""The reason, in words, for the upgrade's log line and status."""
