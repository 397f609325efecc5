"""What a revision declares: the profile columns it syncs, the functions and triggers it installs.

Revisions build these through the kit (``kit.Column``, ``kit.Function``,
``kit.Trigger``, ``kit.Declares``); ``ghostsync.chain`` walks them. Part of
the kit's stable contract: a field may be added with a default, never
changed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A column of public.users that the sync writes.

    ``source`` is an SQL expression over the auth row, written with ``{row}``
    for it (``"{row}.email_confirmed_at IS NOT NULL"``); ``sql_type`` is the type
    the expression yields, ``max_length`` the longest value it can yield
    (``None``: unbounded) and ``nullable`` whether it can be NULL. ``synced``
    columns follow the auth row on every change (and make a profile stale when
    they differ); the others are written when the profile is created, and,
    where ``on_update`` gives an expression, whenever it is brought up to date
    (``on_update`` must not read the auth row: ``"pg_catalog.now()"`` for a
    column like ``updated_at``).
    """

    name: str
    source: str
    sql_type: str
    nullable: bool = True
    max_length: int | None = None
    synced: bool = True
    on_update: str | None = None

    def expression(self, row: str) -> str:
        """The value for a new profile, from the auth row named ``row``."""
        return self.source.format(row=row)

    def update_expression(self, row: str) -> str | None:
        """The value written when an existing profile is brought up to date (None: left as it is)."""
        if self.on_update is not None:
            return self.on_update.format(row=row)
        return self.expression(row) if self.synced else None


@dataclass(frozen=True)
class Function:
    """A function a revision installs: its signature and its whole CREATE OR REPLACE statement."""

    signature: str
    create: str


# Dropping a trigger takes ownership of its table (or supautils' drop_trigger_grants on hosted Supabase):
# where the role has neither, the upgrade stops with one line that says who can run it. A trigger of
# that name that is not there is not dropped at all: no DROP statement runs (supautils would lock the
# tables it lists for one), and creating a constraint trigger takes the TRIGGER privilege alone.
REPLACE_BY_CONSTRAINT_TRIGGER = """DO $ghostsync_replace$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
             WHERE tgrelid = '{table_literal}'::pg_catalog.regclass AND tgname = '{literal}' AND NOT tgisinternal) THEN
    DROP TRIGGER "{name}" ON "{schema}"."{table}";
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION 'ghostsync: cannot replace trigger % on % by its deferred form: role % is not the owner of % (%) '
    'and this database does not let it drop a trigger there; hosted Supabase allows it through supautils '
    '(supautils.drop_trigger_grants); here run the upgrade as the owner or a superuser (DATABASE_URL of '
    'supabase_admin); nothing of this revision was applied', '{literal}', '{table_literal}', current_user,
    '{table_literal}', (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class AS c
                        WHERE c.oid = '{table_literal}'::pg_catalog.regclass);
END
$ghostsync_replace$;"""


@dataclass(frozen=True)
class Trigger:
    """A trigger a revision installs: its name, its table, and its definition exactly as
    ``pg_get_triggerdef`` prints it under ``search_path = ''`` (drift compares the two)."""

    name: str
    table: str
    definition: str

    @property
    def create(self) -> str:
        """The statement(s) that put this trigger in place, replacing one of the same name.

        A constraint trigger cannot be created OR REPLACE (nor can a plain trigger be
        replaced by one): one of the same name is dropped first, in the same step; where
        none is there, nothing is dropped.
        """
        if self.definition.startswith("CREATE CONSTRAINT TRIGGER "):
            schema, _, table = self.table.partition(".")
            return REPLACE_BY_CONSTRAINT_TRIGGER.format(
                name=self.name, schema=schema, table=table, literal=self.name.replace("'", "''"),
                table_literal=self.table.replace("'", "''")) + f"\n{self.definition};"
        if not self.definition.startswith("CREATE TRIGGER "):
            raise ValueError(f"trigger {self.name}: the definition must start with 'CREATE TRIGGER ' "
                             "or 'CREATE CONSTRAINT TRIGGER '")
        return "CREATE OR REPLACE TRIGGER " + self.definition.removeprefix("CREATE TRIGGER ") + ";"


@dataclass(frozen=True)
class Declares:
    """What a revision changes in what ghostsync syncs and installs.

    ``columns`` add or redefine profile columns (by name); ``functions`` and
    ``triggers`` are installed or replaced (by signature / name); ``removes``
    names functions (signatures) and triggers (names) this revision takes
    away; ``jobs`` are the audit-log job names of data jobs it runs.
    Walking the chain from base to a revision and applying each revision's
    ``Declares`` gives what that revision leaves in place.
    """

    columns: tuple[Column, ...] = ()
    functions: tuple[Function, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    removes: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
