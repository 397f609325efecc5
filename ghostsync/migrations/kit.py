"""The kit: everything a revision uses from the package, and nothing more.

STABLE CONTRACT. Revisions are frozen history: once released, a revision
file never changes, so what it does must not change either. A revision
reaches the package only through the names in ``__all__`` (each used by a
revision of the chain, by the revisions ``ghostsync revision`` writes, or, for
``drop_function``, by a host's revision that installs a function: a contract
name can never go after the first release), and passes every value that
shapes what it does (object definitions, job names, statements, default batch
size, dead-after time) as an explicit argument. The kit and the revisions
import nothing of ghostsync outside ``ghostsync.migrations`` (declarations,
settings, the job runner ``jobs``; ``tests/test_migration_layer.py``), so no
change to the runtime reaches them; the runtime may import from here.

What is pinned (``tests/test_revisions_golden.py``, golden SQL files under
``tests/data/golden/``), per revision, up and down:

- offline: the whole ``--sql`` text of the revision;
- online: every statement the revision sends through the kit, in order, with
  its parameters, on a real database: its DDL steps and their lock preludes,
  its checks, and its data job (mark of dead runs, start, each batch with its
  row-lock bound, the sweep, finish); for the jobs of 0003 and 0009, the
  same job with one account held: each retry and the failed finish; and for
  0003, the job where the app's table refuses one profile and swallows
  another: the row-by-row path, each row recorded, the partial finish.

Deliberately not pinned: the ``-x`` settings and their defaults (the deploy's
policy; the golden files fix them), the pauses between retries, and the
transaction ids a sweep reads. To do something new, add a new operation;
never change what an existing one emits.

What the kit gives a revision:

- **Declarations** (``Column``, ``Function``, ``Trigger``, ``Declares``): the
  revision states, as data next to its frozen SQL, the profile columns it
  syncs and how each is derived from an auth row, and the functions and
  triggers it installs. ``ghostsync status``, ``repair``, ``backfill`` and the
  drift check read the declarations of the revision the database is at.
- **Ownership** (``install_function``, ``drop_function``, ``install_triggers``,
  ``drop_triggers``, ``trigger_sql``, ``column_sql``, ``trigger_drop_locks``): every
  object ghostsync creates is recorded in
  ``ghostsync.objects`` in the same transaction as its DDL; an object of the
  same name that is not recorded there (the app's) is never replaced or
  dropped: the upgrade stops with one line instead.
- **Lock safety** (``step``): every DDL step runs under a lock budget
  (``-x lock_timeout``, shared out among the locks the step takes) inside a
  savepoint, retried with backoff when its locks are busy; offline the same
  retry runs inside the database (a ``DO`` block), so ``--sql`` files and
  Supabase CLI migrations behave the same way.
- **Jobs** (``backfill``, ``BackfillStatements``, ``JobSweep``, ``RowByRow``, ``Write``):
  batched data work in short transactions of its own, audited in ``cleanup_audit_log``;
  each batch bounds its own row-lock waits (every driver), a sweep waits for the open
  writers of auth.users before it vouches for the run, a row the app's table refuses
  (or swallows) is recorded and the run ends ``partial`` (``ghostsync.migrations.jobs``);
  the profile columns a job writes are those the table has
  (``ghostsync.migrations.profile_columns``).
- **A transaction of its own**: before anything it runs, every operation refuses with one
  line when the revision would share its transaction with others
  (``ghostsync.migrations.own_transaction``: a host env.py without
  ``transaction_per_migration=True``, or one that wraps the run in a transaction).
- **Any driver**: statements go to the server one at a time (asyncpg takes no more), and
  errors are read the same way for psycopg2, psycopg 3 and asyncpg
  (``ghostsync.migrations.dberrors``).
- **One-line errors** (``check``, and every operation above): a check a revision
  makes in SQL (``RAISE EXCEPTION 'ghostsync: ...'``), a lock that never came free,
  and a job that could not finish end the command with one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from alembic import context, op
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ghostsync.migrations import dberrors, exposure, jobs, own_transaction, profile_columns, settings, statements
from ghostsync.migrations.declarations import Column, Declares, Function, Trigger
from ghostsync.migrations.jobs import BackfillStatements, JobResult, JobSweep, RowByRow
from ghostsync.migrations.profile_columns import Write

log = logging.getLogger("alembic.ghostsync")

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
INSUFFICIENT_PRIVILEGE = "42501"
MAX_BACKOFF_S = 2.0
MESSAGE_PREFIX = "ghostsync: "


# -- settings ------------------------------------------------------------------------------------

def _x_args() -> dict[str, str]:
    try:
        return dict(context.get_x_argument(as_dictionary=True))
    except Exception:
        return {}


@dataclass(frozen=True)
class LockBudget:
    """How long any request may wait behind one attempt of a step, and how often to try.

    From ``-x lock_timeout`` / ``GHOSTSYNC_LOCK_TIMEOUT`` (default 400ms),
    ``lock_retries`` (20) and ``lock_backoff`` (100ms, doubling up to 2s).
    """

    budget: timedelta
    retries: int
    backoff: timedelta
    statement_timeout: timedelta

    @classmethod
    def configured(cls) -> LockBudget:
        x = _x_args()
        try:
            return cls(
                budget=settings.resolve_duration("lock_timeout", x),
                retries=settings.resolve_count("lock_retries", x),
                backoff=settings.resolve_duration("lock_backoff", x),
                statement_timeout=settings.resolve_duration("statement_timeout", x),
            )
        except settings.SettingError as exc:
            raise CommandError(str(exc)) from None

    @property
    def budget_ms(self) -> int:
        return max(1, round(self.budget.total_seconds() * 1000))

    def pause(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_S, self.backoff.total_seconds() * (2**attempt)))


# -- steps -----------------------------------------------------------------------------------------

# How many tables a DROP TRIGGER on auth.users locks: the table itself and, where
# Supabase's supautils extension runs the drop (supautils.drop_trigger_grants),
# every listed table before it in the list's order.
SUPAUTILS_DROP_LOCKS = (
    "(SELECT 1 + count(*) FROM (SELECT g.t, g.n FROM pg_catalog.jsonb_array_elements_text("
    "coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb"
    " -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS g(t, n)) AS grants"
    " WHERE grants.t <> {table} AND pg_catalog.to_regclass(grants.t) IS NOT NULL"
    " AND grants.n < coalesce((SELECT min(h.n) FROM pg_catalog.jsonb_array_elements_text("
    "coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb"
    " -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS h(t, n) WHERE h.t = {table}), 2147483647))"
)

# Each lock waits at most half of deadlock_timeout: supautils takes auth.users before
# auth.audit_log_entries and a sign-in writes them in the other order, so a longer wait would let
# the deadlock detector pick a sign-in as its victim before our wait gives up.
DEADLOCK_SHARE = ("(SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s "
                  "WHERE s.name = 'deadlock_timeout')")

LOCK_PRELUDE = (
    "SELECT pg_catalog.set_config('lock_timeout', "
    "least(greatest(10, {budget_ms} / {locks}), " + DEADLOCK_SHARE + ")::int::text || 'ms', true), "
    "pg_catalog.set_config('statement_timeout', '{statement_ms}ms', true)"
)

OFFLINE_LOCK_STEP = """DO $ghostsync_step$
DECLARE
  attempt int := 0;
BEGIN
  LOOP
    BEGIN
      PERFORM pg_catalog.set_config('lock_timeout',
        least(greatest(10, {budget_ms} / {locks}), """ + DEADLOCK_SHARE + """)::int::text || 'ms', true);
      PERFORM pg_catalog.set_config('statement_timeout', '{statement_ms}ms', true);
{body}
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > {retries} THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within {budget_ms} ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', {what}, attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least({max_backoff}, {backoff} * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;"""

OFFLINE_PLAIN_PRELUDE = """DO $ghostsync_step$
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', '{budget_ms}ms', true);
  PERFORM pg_catalog.set_config('statement_timeout', '{statement_ms}ms', true);
END
$ghostsync_step$;"""


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class StepReport:
    """How one step went: how many attempts its locks needed, and how long it waited in all."""

    what: str
    attempts: int = 0
    waited_s: float = 0.0
    history: list[float] = field(default_factory=list)


def step(sql: str, what: str, *, locks: str | None = None, budget: LockBudget | None = None) -> StepReport:
    """Run ``sql`` (one or more statements) as one guarded step of the revision.

    ``locks``: an SQL expression for how many tables the step locks that
    requests of the auth service or the app wait on (``"1"`` for a trigger on
    auth.users or an ALTER of public.users); ``None`` for a step that locks no
    such table. A locking step gets ``lock_timeout`` = budget / locks per lock
    and the whole budget as its statement timeout, and is retried with
    backoff when a lock is busy; offline the retry loop is a ``DO`` block.
    Any other step runs under the budget as its lock timeout and the
    configured statement timeout. A ``ghostsync: ...`` exception the SQL
    raises, and a lock that never came free, end the command with one line.
    """
    own_transaction.refuse_shared(op.get_context())
    budget = budget or LockBudget.configured()
    statement_ms = round(budget.statement_timeout.total_seconds() * 1000)
    report = StepReport(what=what)
    if context.is_offline_mode():
        if locks is None:
            _emit(OFFLINE_PLAIN_PRELUDE.format(budget_ms=budget.budget_ms, statement_ms=statement_ms))
            _emit(sql)
        else:
            body = "\n".join("      " + line if line else line for line in sql.strip().splitlines())
            _emit(OFFLINE_LOCK_STEP.format(
                budget_ms=budget.budget_ms, locks=locks, statement_ms=budget.budget_ms, body=body,
                retries=budget.retries, what=_quote_literal(what), max_backoff=MAX_BACKOFF_S,
                backoff=budget.backoff.total_seconds()))
        return report
    conn = op.get_bind()
    began = time.monotonic()
    with ghostsync_errors():
        if locks is None:
            conn.exec_driver_sql(LOCK_PRELUDE.format(budget_ms=budget.budget_ms, locks=1, statement_ms=statement_ms))
            _run_each(conn, sql)
            report.attempts = 1
            return report
        prelude = LOCK_PRELUDE.format(budget_ms=budget.budget_ms, locks=locks, statement_ms=budget.budget_ms)
        for attempt in range(budget.retries + 1):
            report.attempts = attempt + 1
            tried = time.monotonic()
            savepoint = conn.begin_nested()
            try:
                conn.exec_driver_sql(prelude)
                _run_each(conn, sql)
            except DBAPIError as exc:
                savepoint.rollback()
                code = dberrors.sqlstate(exc)
                if code not in (LOCK_NOT_AVAILABLE, QUERY_CANCELED):
                    raise
                report.history.append(time.monotonic() - tried)
                if attempt == budget.retries:
                    report.waited_s = time.monotonic() - began
                    _log_step(report, gave_up=True)
                    raise CommandError(
                        f"ghostsync: gave up on {what}: its locks were not free within {budget.budget_ms} ms "
                        f"in {report.attempts} attempts (a long transaction holds them); nothing of this "
                        "revision was applied. Retry later, or raise -x lock_timeout / -x lock_retries"
                    ) from None
                time.sleep(budget.pause(attempt))
            else:
                savepoint.commit()
                break
        # the rest of the revision runs under the ordinary limits again
        conn.exec_driver_sql(LOCK_PRELUDE.format(budget_ms=budget.budget_ms, locks=1, statement_ms=statement_ms))
    report.waited_s = time.monotonic() - began
    _log_step(report)
    return report


def _emit(sql: str) -> None:
    """Offline: print ``sql`` into the script. Alembic ends what it prints with its own ``;``, so the
    text's own last one is left off (else the script would read ``;;``)."""
    op.execute(sql.rstrip().removesuffix(";").rstrip())


def _run_each(conn: Connection, sql: str) -> None:
    """Send ``sql`` to the server one statement at a time (asyncpg prepares each text it sends, and
    a prepared statement holds one command), with no parameter markers read in it."""
    for statement in statements.split(sql):
        conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


def _log_step(report: StepReport, gave_up: bool = False) -> None:
    outcome = "gave up after" if gave_up else "locks taken on attempt"
    log.info("ghostsync: %s: %s %d (%.0f ms in all)", report.what, outcome, report.attempts,
             report.waited_s * 1000)


# -- ownership -------------------------------------------------------------------------------------

REGISTER = """INSERT INTO ghostsync.objects (kind, name, created, revision, owner)
VALUES ({kind}, {name}, {created}, {revision}, current_user)
ON CONFLICT (kind, name) DO UPDATE SET revision = EXCLUDED.revision, recorded_at = pg_catalog.now();"""

UNREGISTER = "DELETE FROM ghostsync.objects WHERE kind = {kind} AND name = {name};"

GUARD_FUNCTION = """DO $ghostsync_guard$
BEGIN
  IF pg_catalog.to_regprocedure({signature}) IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = {signature}
  ) THEN
    RAISE EXCEPTION 'ghostsync: function % exists and was not created by ghostsync: it is left as it is; '
      'rename or drop it yourself if it is yours to change', {signature};
  END IF;
END
$ghostsync_guard$;"""

REVOKE_EXECUTE = """REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;
DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION {signature} FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION {signature} FROM authenticated;
  END IF;
END
$ghostsync_guard$;"""

DROP_OWN_FUNCTION = """DO $ghostsync_guard$
BEGIN
  IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = {signature}) THEN
    EXECUTE 'DROP FUNCTION IF EXISTS ' || {signature};
    DELETE FROM ghostsync.objects WHERE kind = 'function' AND name = {signature};
  ELSIF pg_catalog.to_regprocedure({signature}) IS NOT NULL THEN
    RAISE NOTICE 'ghostsync: function % was not created by ghostsync: left in place', {signature};
  END IF;
END
$ghostsync_guard$;"""

GUARD_TRIGGER = """DO $ghostsync_guard$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = {table}::regclass AND tgname = {name} AND NOT tgisinternal
  ) AND NOT EXISTS (
    SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = {name} || ' ON ' || {table}
  ) THEN
    RAISE EXCEPTION 'ghostsync: trigger % on % exists and was not created by ghostsync: it is left as it is',
      {name}, {table};
  END IF;
END
$ghostsync_guard$;"""

DROP_OWN_TRIGGER = """DO $ghostsync_drop$
BEGIN
  IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = {name} || ' ON ' || {table}) THEN
    BEGIN
      DROP TRIGGER IF EXISTS {ident} ON {table_ident};
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION 'ghostsync: cannot drop trigger % on %: role % is not its owner (%) and this database '
        'does not let it drop the trigger; hosted Supabase allows it through supautils '
        '(supautils.drop_trigger_grants); here run the downgrade as the owner or a superuser '
        '(DATABASE_URL of supabase_admin); nothing of this revision was applied',
        {name}, {table}, current_user,
        (SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = {table}::regclass);
    END;
    DELETE FROM ghostsync.objects WHERE kind = 'trigger' AND name = {name} || ' ON ' || {table};
  ELSIF EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = {table}::regclass AND tgname = {name} AND NOT tgisinternal
  ) THEN
    RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', {name}, {table};
  END IF;
END
$ghostsync_drop$;"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if not name.isidentifier() or name.lower() != name else name


def function_sql(function: Function, revision: str) -> str:
    """Create or replace ``function`` unless a function of that signature exists that ghostsync
    did not create; revoke EXECUTE from PUBLIC, anon and authenticated; record it as ghostsync's.
    Creating a function in the ``ghostsync`` schema locks no table the auth service uses."""
    signature = _quote_literal(function.signature)
    return "\n".join((
        GUARD_FUNCTION.format(signature=signature),
        function.create.strip(),
        REVOKE_EXECUTE.format(signature=function.signature),
        REGISTER.format(kind="'function'", name=signature, created="true", revision=_quote_literal(revision)),
    ))


def install_function(function: Function, revision: str) -> None:
    step(function_sql(function, revision), f"create function {function.signature}")


def drop_function_sql(signature: str) -> str:
    """Drop a function ghostsync created (per ``ghostsync.objects``); anything else stays."""
    return DROP_OWN_FUNCTION.format(signature=_quote_literal(signature))


def drop_function(signature: str) -> None:
    step(drop_function_sql(signature), f"drop function {signature}")


def trigger_sql(trigger: Trigger, revision: str) -> str:
    """Create or replace ``trigger`` unless a trigger of that name on its table exists that
    ghostsync did not create; record it. Locks its table (SHARE ROW EXCLUSIVE)."""
    name, table = _quote_literal(trigger.name), _quote_literal(trigger.table)
    return "\n".join((
        GUARD_TRIGGER.format(name=name, table=table),
        trigger.create,
        REGISTER.format(kind="'trigger'", name=f"{name} || ' ON ' || {table}", created="true",
                        revision=_quote_literal(revision)),
    ))


def install_triggers(triggers: tuple[Trigger, ...], revision: str) -> None:
    """All of ``triggers`` in one step: their table is locked once, under one budget."""
    tables = {t.table for t in triggers}
    step("\n".join(trigger_sql(t, revision) for t in triggers),
         "create trigger(s) " + ", ".join(f"{t.name} on {t.table}" for t in triggers), locks=str(len(tables)))


def drop_trigger_sql(name: str, table: str) -> str:
    schema, _, relname = table.partition(".")
    return DROP_OWN_TRIGGER.format(name=_quote_literal(name), table=_quote_literal(table), ident=_ident(name),
                                   table_ident=f"{_ident(schema)}.{_ident(relname)}")


# An earlier revision's trigger put back in place of ghostsync's trigger of that name (CREATE OR REPLACE:
# the TRIGGER privilege, no drop), or where no trigger of that name is there; one that is not ghostsync's
# (made by hand, its register entry gone) is left as it is, as every downgrade leaves it.
RESTORE_TRIGGER = """DO $ghostsync_restore$
BEGIN
  IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = {name} || ' ON ' || {table})
     OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = {table}::pg_catalog.regclass AND tgname = {name} AND NOT tgisinternal) THEN
    EXECUTE {create};
    {register}
  ELSE
    RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', {name}, {table};
  END IF;
END
$ghostsync_restore$;"""


def restore_triggers(triggers: tuple[Trigger, ...], revision: str) -> None:
    """Put ``triggers`` (an earlier revision's, ``revision`` being that revision) back in place of
    ghostsync's triggers of the same names, in one step; a trigger of that name that is not
    ghostsync's is left as it is. Plain triggers are replaced in place (CREATE OR REPLACE TRIGGER,
    which the TRIGGER privilege allows); an earlier constraint trigger is created as ``Trigger.create``
    does (dropping ghostsync's trigger of that name first, which takes the table's owner or supautils)."""
    sql = []
    for trigger in triggers:
        name, table = _quote_literal(trigger.name), _quote_literal(trigger.table)
        sql.append(RESTORE_TRIGGER.format(
            table=table, name=name, create=_quote_literal(trigger.create.rstrip().removesuffix(";")),
            register=REGISTER.format(kind="'trigger'", name=_quote_literal(f"{trigger.name} ON {trigger.table}"),
                                     created="true", revision=_quote_literal(revision))))
    drops = any(t.definition.startswith("CREATE CONSTRAINT TRIGGER ") for t in triggers)
    step("\n".join(sql), f"restore {revision}'s trigger(s) " + ", ".join(t.name for t in triggers),
         locks=trigger_drop_locks(triggers[0].table) if drops else str(len({t.table for t in triggers})))


def trigger_drop_locks(table: str) -> str:
    """The ``locks`` of a ``step`` that drops (or replaces) a trigger on ``table``: the table itself
    and, where Supabase's supautils runs the drop, the tables it locks before it."""
    return SUPAUTILS_DROP_LOCKS.format(table=_quote_literal(table))


def drop_triggers(names: tuple[str, ...], table: str, *, functions: tuple[str, ...] = ()) -> None:
    """Drop the triggers ghostsync created (per ``ghostsync.objects``) on ``table``, then the
    ``functions`` they called, in one step; anything else stays.

    Where the role may drop them only through supautils, the drop also locks
    the tables supautils locks; the budget is shared among all of them.
    Where it may not drop them at all, the command ends with one line naming
    what is missing, and nothing of the revision is applied.
    """
    sql = [drop_trigger_sql(name, table) for name in names] + [drop_function_sql(f) for f in functions]
    step("\n".join(sql), "drop trigger(s) " + ", ".join(names) + f" on {table}"
         + (" and function(s) " + ", ".join(functions) if functions else ""),
         locks=trigger_drop_locks(table))


ADD_OR_ADOPT_COLUMN = """DO $ghostsync_column$
DECLARE
  found_type text;
  found_length int;
  found_not_null boolean;
BEGIN
  SELECT pg_catalog.format_type(a.atttypid, NULL),
         CASE WHEN a.atttypid IN ('pg_catalog.varchar'::regtype, 'pg_catalog.bpchar'::regtype) AND a.atttypmod > 4
              THEN a.atttypmod - 4 END,
         a.attnotnull
    INTO found_type, found_length, found_not_null
  FROM pg_catalog.pg_attribute AS a
  WHERE a.attrelid = 'public.users'::regclass AND a.attname = {name} AND a.attnum > 0 AND NOT a.attisdropped;
  IF found_type IS NULL THEN
    -- never a column of auth data on a table other users can read (ghostsync.migrations.exposure)
    IF coalesce({exposed}, false) THEN
      RETURN;
    END IF;
    ALTER TABLE public.users ADD COLUMN {ident} {sql_type};
    {register_created}
    RETURN;
  END IF;
  found_type := pg_catalog.regexp_replace(found_type, '^.*\\.', '');
  IF NOT found_type = ANY ({accepted}) THEN
    RAISE EXCEPTION 'ghostsync: existing column public.users.% is %, but the sync writes % into it: '
      'change its type to one of % or drop it; nothing was changed', {name}, found_type, {sql_type_literal},
      pg_catalog.array_to_string({accepted}, ', ');
  END IF;
  IF found_length IS NOT NULL AND found_length < {needed_length} THEN
    RAISE EXCEPTION 'ghostsync: existing column public.users.% is %(%), but the sync writes values up to % '
      'characters long into it: widen it (ALTER TABLE public.users ALTER COLUMN % TYPE %); nothing was changed',
      {name}, found_type, found_length, {needed_length_text}, {name}, {sql_type_literal};
  END IF;
  IF found_not_null AND {nullable} THEN
    RAISE EXCEPTION 'ghostsync: existing column public.users.% is NOT NULL, but the sync writes NULL into it '
      'for some users (%): drop the NOT NULL (ALTER TABLE public.users ALTER COLUMN % DROP NOT NULL); '
      'nothing was changed', {name}, {null_when}, {name};
  END IF;
  {register_adopted}
END
$ghostsync_column$;"""

ACCEPTED_TYPES = {
    "text": ("text", "character varying", "citext"),
    "boolean": ("boolean",),
    "timestamptz": ("timestamp with time zone", "timestamp without time zone"),
    "uuid": ("uuid",),
    "jsonb": ("jsonb", "json"),
}


def column_sql(column: Column, revision: str, *, null_when: str = "") -> str:
    """Add ``column`` to public.users, or adopt an existing one after checking that it takes
    every value the sync writes (type, length, NULL); refuses with one line otherwise. On a table
    other users can read (``exposure.EXPOSED``) a missing column is not added: the sync leaves it out.
    Adding a nullable column without a default changes only the catalog, but locks
    public.users (ACCESS EXCLUSIVE) for that moment."""
    accepted = ACCEPTED_TYPES.get(column.sql_type, (column.sql_type,))
    name = _quote_literal(column.name)
    full = _quote_literal(f"public.users.{column.name}")
    return ADD_OR_ADOPT_COLUMN.format(
        exposed=exposure.EXPOSED, name=name, ident=_ident(column.name), sql_type=column.sql_type,
        sql_type_literal=_quote_literal(column.sql_type),
        accepted="ARRAY[" + ", ".join(_quote_literal(t) for t in accepted) + "]",
        needed_length=column.max_length or 0, needed_length_text=_quote_literal(str(column.max_length or 0)),
        nullable="true" if column.nullable else "false",
        null_when=_quote_literal(null_when or "its source is NULL"),
        register_created=REGISTER.format(kind="'column'", name=full, created="true",
                                         revision=_quote_literal(revision)),
        register_adopted=REGISTER.format(kind="'column'", name=full, created="false",
                                         revision=_quote_literal(revision)),
    )


# -- jobs ------------------------------------------------------------------------------------------

def backfill(
    statements: BackfillStatements,
    offline_sql: str,
    *,
    job_name: str,
    default_batch_size: int,
    default_dead_after: str,
    writes: tuple[profile_columns.Write, ...] = (),
) -> JobResult | None:
    """Run a batched job: online in autocommit batches (each its own short transaction, its row-lock
    waits bounded by the batch itself: ``ghostsync.migrations.jobs``), offline as ``offline_sql``
    (``{batch_size}`` filled in). The revision passes its own statements, job name and defaults;
    ``-x batch_size`` / ``GHOSTSYNC_BATCH_SIZE`` and ``-x dead_after`` / ``GHOSTSYNC_DEAD_AFTER``
    override the defaults; ``-x lock_timeout`` / ``lock_retries`` / ``lock_backoff`` bound a batch's
    row-lock waits, ``-x writers_wait`` how long a sweep waits for open writers of auth.users.
    ``writes``: the profile columns the statements' placeholders stand for
    (``ghostsync.migrations.profile_columns``), filled in for the table the database has.

    A run that cannot vouch for everything (a writer still open) or fails ends the command with one
    line. A ``partial`` run (every batch done, but a ghost the app's table stops, with ``RowByRow``
    statements) does not: the upgrade goes on, since no signup should wait for the app's rule; its audit
    row names each such row and why, a warning line says so, and ``ghostsync status`` counts them."""
    x = _x_args()
    try:
        batch_size = settings.resolve_count("batch_size", x, default=str(default_batch_size))
        dead_after = settings.resolve_duration("dead_after", x, default=default_dead_after)
        interval = settings.resolve_duration("progress_interval", x)
        writers_wait = settings.resolve_duration("writers_wait", x)
        row_lock_budget = jobs.RowLockBudget.configured(x)
    except settings.SettingError as exc:
        raise CommandError(str(exc)) from None
    migration = op.get_context()
    # Before autocommit_block: it commits the revision's transaction, which must hold nothing else.
    own_transaction.refuse_shared(migration)
    if writes:  # the profile columns the job writes, for the table this database has
        found = profile_columns.full_shape(writes) if migration.as_sql else profile_columns.table_columns(op.get_bind())
        statements = profile_columns.render_all(statements, writes, found)
        offline_sql = profile_columns.render(offline_sql, writes, found)
    if migration.as_sql:
        _emit(offline_sql.format(batch_size=batch_size))
        return None
    progress = _ProgressLog(job_name, interval.total_seconds(), jobs.estimated_auth_users(op.get_bind()))
    with own_transaction.autocommit_block(migration), ghostsync_errors():
        try:
            result = jobs.run(op.get_bind(), statements, batch_size=batch_size, job_name=job_name,
                              dead_after_s=dead_after.total_seconds(), budget=row_lock_budget,
                              writers_wait_s=writers_wait.total_seconds(), on_batch=progress)
        except DBAPIError as exc:
            if dberrors.sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            raise CommandError(
                f"ghostsync: {job_name} stopped: an account stayed locked by another transaction through "
                f"{row_lock_budget.retries + 1} tries of {row_lock_budget.lock_timeout} (lock timeout, SQLSTATE "
                "55P03); the profiles written so far are kept: run the upgrade again once that transaction has "
                "ended, or raise -x lock_timeout / -x lock_retries") from None
    if result.status == "partial":
        log.warning("ghostsync: %s partial (audit row %d): %s; the upgrade goes on: see ghostsync status "
                    "(profiles that cannot be created)", job_name, result.run_id, result.reason)
    elif result.status != "succeeded":
        raise CommandError(f"ghostsync: {job_name} stopped (audit row {result.run_id}): {result.reason}; "
                           "nothing of this revision is recorded as applied")
    log.info("ghostsync: %s repaired %d row(s) in %d batch(es) over %d auth user(s); longest batch %.0f ms; "
             "audit row %d", job_name, result.repaired, result.batches, result.scanned,
             result.longest_batch_s * 1000, result.run_id)
    return result


class _ProgressLog:
    """Logs a progress line at a steady interval, so a pipeline without a terminal shows it is alive."""

    def __init__(self, job_name: str, interval_s: float, total: int | None = None) -> None:
        self.job_name = job_name
        self.interval_s = interval_s
        self.total = total
        self.began = self.last = time.monotonic()

    def __call__(self, result: JobResult) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return
        self.last = now
        rate = result.scanned / max(now - self.began, 1e-6)
        if self.total and rate > 0:
            left = f"~{max(0, self.total - result.scanned) / rate:.0f} s left of ~{self.total} auth user(s)"
        else:
            left = "time left unknown"
        log.info("ghostsync: %s: %d auth user(s) walked, %d repaired, %d batch(es), %.0f/s, %s", self.job_name,
                 result.scanned, result.repaired, result.batches, rate, left)


# -- one-line errors ---------------------------------------------------------------------------------

def ghostsync_message(exc: DBAPIError) -> str | None:
    """The first line of a ``ghostsync: ...`` exception raised in SQL, else None."""
    first = dberrors.primary_message(exc)
    return first if first.startswith(MESSAGE_PREFIX) else None


@contextmanager
def ghostsync_errors() -> Iterator[None]:
    """A ``ghostsync: ...`` exception raised in SQL becomes Alembic's one ``FAILED:`` line."""
    try:
        yield
    except DBAPIError as exc:
        message = ghostsync_message(exc)
        if message is None:
            raise
        raise CommandError(message) from None


def check(sql: str) -> None:
    """Run a check (a ``DO`` block that raises ``ghostsync: ...`` when a precondition fails)."""
    own_transaction.refuse_shared(op.get_context())
    if context.is_offline_mode():
        _emit(sql)
        return
    with ghostsync_errors():
        _run_each(op.get_bind(), sql)


def log_setting(name: str) -> None:
    """Log, online, what the revision's last step left in the transaction-local setting ``name`` (a ``DO``
    block returns nothing): one line, nothing when the setting is unset or empty. Offline there is
    nothing to read."""
    if context.is_offline_mode():
        return
    value = op.get_bind().execute(text("SELECT pg_catalog.current_setting(:name, true)"), {"name": name}).scalar()
    if value:
        log.info("ghostsync: %s", value)


__all__ = [
    "BackfillStatements",
    "Column",
    "Declares",
    "Function",
    "JobSweep",
    "RowByRow",
    "Trigger",
    "Write",
    "backfill",
    "check",
    "column_sql",
    "drop_function",
    "drop_triggers",
    "install_function",
    "install_triggers",
    "log_setting",
    "restore_triggers",
    "step",
    "trigger_drop_locks",
    "trigger_sql",
]

