"""Drift: does the database hold what the revision it is at declares, and is it ghostsync's?

Compared with the declaration of the recorded revision (``chain.declared_at``):

- each function: present, recorded as ghostsync's in ``ghostsync.objects``,
  its text (``pg_proc.prosrc``), its volatility, strictness and language
  (``ALTER FUNCTION ... STABLE`` makes every profile write fail with 0A000:
  ``attributes`` reads what the declaration says, VOLATILE, CALLED ON NULL
  INPUT where it says nothing), SECURITY DEFINER, ``search_path = ''``, its
  other SET clauses as declared (``SET TimeZone = 'UTC'``), its
  owner (the role that installed it, per the register), and not executable
  by PUBLIC, anon or authenticated;
- each trigger: present, recorded as ghostsync's, its whole definition
  (``pg_get_triggerdef`` under ``search_path = ''``, whose output depends on
  the search path: timing, events, columns, WHEN clause, function), and
  whether it fires (``tgenabled``: disabled, or replica-only, fires for no
  ordinary session);
- the profile table and ghostsync's own tables: row level security, and the
  privileges an end user's role should not have (status judges them: the
  profile table is the app's whether ghostsync created or adopted it, so
  what is open there is a warning; ghostsync's own tables stay closed).

Triggers on auth.users and public.users that ghostsync did not create are
listed as the app's, never judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ghostsync.chain import Declared, function_body

API_ROLES = ("anon", "authenticated")
FIRING = {"O": "enabled", "A": "enabled", "D": "disabled", "R": "replica_only"}
VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}
# Privileges row level security does not govern, and that no end user needs on profiles.
UNGOVERNED = ("TRUNCATE", "REFERENCES", "TRIGGER")


@dataclass(frozen=True)
class Attributes:
    """What a function's CREATE statement says of it besides its text, as pg_proc keeps it."""

    volatility: str  # IMMUTABLE | STABLE | VOLATILE
    strict: bool
    language: str
    # its SET clauses other than search_path (checked on its own), as pg_proc.proconfig lists them
    settings: tuple[str, ...] = ()

    def differences(self, volatility: str, strict: bool, language: str,
                    config: list[str] | None = None) -> list[str]:
        """How an installed function with these attributes (``config``: its proconfig) differs from the
        declared ones."""
        out = []
        installed = [c for c in config or [] if not c.startswith("search_path=")]
        if installed != list(self.settings):
            out.append(f"SET {', '.join(installed) or 'nothing'} (declared {', '.join(self.settings) or 'nothing'})")
        if volatility != self.volatility:
            out.append(f"{volatility} (declared {self.volatility})")
        if strict != self.strict:
            out.append("STRICT (declared CALLED ON NULL INPUT)" if strict else "CALLED ON NULL INPUT (declared STRICT)")
        if language != self.language:
            out.append(f"LANGUAGE {language} (declared {self.language})")
        return out

    def as_list(self) -> list[Any]:
        return [self.volatility, self.strict, self.language, list(self.settings)]


def attribute_differences_sql(installed: str, declared: str) -> str:
    """``Attributes.differences`` as an SQL text[] expression, for the verification script: ``installed``
    names a row with ``provolatile``, ``proisstrict``, ``lanname`` and ``proconfig``, ``declared`` a jsonb
    array ``Attributes.as_list()``."""
    settings = ("ARRAY(SELECT c.c FROM pg_catalog.unnest(" + installed + ".proconfig) WITH ORDINALITY AS c(c, n) "
                "WHERE c.c NOT LIKE 'search\\_path=%' ORDER BY c.n)")
    declared_settings = ("ARRAY(SELECT d.d FROM pg_catalog.jsonb_array_elements_text(coalesce(" + declared
                         + " -> 3, '[]')) WITH ORDINALITY AS d(d, n) ORDER BY d.n)")
    volatility = ("CASE " + " ".join(f"WHEN {installed}.provolatile = '{k}' THEN '{v}'" for k, v in VOLATILITY.items())
                  + f" ELSE {installed}.provolatile::text END")
    return (
        "pg_catalog.array_remove(ARRAY["
        f"CASE WHEN {volatility} <> ({declared} ->> 0) THEN pg_catalog.format('%s (declared %s)', {volatility}, "
        f"{declared} ->> 0) END, "
        f"CASE WHEN {installed}.proisstrict <> ({declared} ->> 1)::boolean THEN CASE WHEN {installed}.proisstrict "
        "THEN 'STRICT (declared CALLED ON NULL INPUT)' ELSE 'CALLED ON NULL INPUT (declared STRICT)' END END, "
        f"CASE WHEN {installed}.lanname::text <> ({declared} ->> 2) THEN pg_catalog.format("
        f"'LANGUAGE %s (declared %s)', {installed}.lanname, {declared} ->> 2) END, "
        f"CASE WHEN {settings} <> {declared_settings} THEN pg_catalog.format('SET %s (declared %s)', "
        f"coalesce(NULLIF(pg_catalog.array_to_string({settings}, ', '), ''), 'nothing'), "
        f"coalesce(NULLIF(pg_catalog.array_to_string({declared_settings}, ', '), ''), 'nothing')) END"
        "], NULL)"
    )


def search_path_pinned_sql(proconfig: str) -> str:
    """Whether ``proconfig`` (an SQL ``text[]``, a function's ``pg_proc.proconfig``) pins ``search_path``
    to '', as an SQL boolean; its other SET clauses are ``attribute_differences_sql``'s."""
    return (f"(ARRAY(SELECT c FROM pg_catalog.unnest({proconfig}) AS c WHERE c LIKE 'search\\_path=%') "
            "= ARRAY['search_path=\"\"'])")


def attributes(create: str) -> Attributes:
    """The volatility, strictness and language a CREATE FUNCTION statement declares (the body left out)."""
    outside = create.replace(function_body(create), " ").upper()
    volatility = re.search(r"\b(IMMUTABLE|STABLE|VOLATILE)\b", outside)
    language = re.search(r"\bLANGUAGE\s+'?(\w+)", outside)
    settings = tuple(f"{name}={value}" for name, value in re.findall(
        r"^SET\s+(\w+)\s*(?:=|TO)\s*'([^']*)'\s*$", create.replace(function_body(create), " "), re.MULTILINE | re.I)
        if name.lower() != "search_path")
    return Attributes(volatility.group(1) if volatility else "VOLATILE",
                      re.search(r"\bSTRICT\b|\bRETURNS\s+NULL\s+ON\s+NULL\s+INPUT\b", outside) is not None,
                      language.group(1).lower() if language else "sql", settings)


@dataclass
class FunctionState:
    signature: str
    state: str  # matches | differs | missing | not_ghostsyncs
    differences: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "differences": self.differences}


@dataclass
class TriggerState:
    name: str
    table: str
    state: str  # enabled | disabled | replica_only | missing | not_ghostsyncs
    matches: bool
    function: str | None = None

    @property
    def fires(self) -> bool:
        return self.state == "enabled"

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "matches": self.matches, "table": self.table, "function": self.function}


@dataclass
class AppTrigger:
    name: str
    table: str
    function: str
    state: str

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "function": self.function, "state": self.state}


@dataclass
class TableState:
    name: str
    exists: bool
    created: bool | None  # None: not recorded (an install older than the register, or not ghostsync's)
    rls: bool
    open_privileges: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"exists": self.exists, "created_by_ghostsync": self.created, "rls": self.rls,
                "open_privileges": self.open_privileges}


@dataclass
class Inspection:
    functions: dict[str, FunctionState]
    triggers: dict[str, TriggerState]
    app_triggers: dict[str, AppTrigger]
    tables: dict[str, TableState]
    registered: dict[tuple[str, str], dict[str, Any]]


def _registered(conn: Connection) -> dict[tuple[str, str], dict[str, Any]]:
    if conn.execute(text("SELECT to_regclass('ghostsync.objects')")).scalar() is None:
        return {}
    rows = conn.execute(text("SELECT kind, name, created, revision, owner FROM ghostsync.objects")).mappings()
    return {(r["kind"], r["name"]): dict(r) for r in rows}


def inspect(conn: Connection, declared: Declared) -> Inspection:
    """Read the catalogs (read-only; safe on a hot standby) and compare them with ``declared``."""
    registered = _registered(conn)
    return Inspection(
        functions={sig: _function(conn, sig, declared.body(sig), attributes(declared.functions[sig].create),
                                  registered) for sig in declared.functions},
        triggers=_triggers(conn, declared, registered),
        app_triggers=_app_triggers(conn, registered),
        tables=_tables(conn, registered),
        registered=registered,
    )


def _function(conn: Connection, signature: str, body: str, declared: Attributes,
              registered: dict[tuple[str, str], dict[str, Any]]) -> FunctionState:
    row = conn.execute(text(
        "SELECT p.prosrc, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) AS owner,"
        " p.provolatile, p.proisstrict, (SELECT l.lanname FROM pg_language AS l WHERE l.oid = p.prolang) AS lanname,"
        " has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,"
        " (SELECT array_agg(r.rolname ORDER BY r.rolname) FROM pg_roles AS r"
        "  WHERE r.rolname IN ('anon', 'authenticated') AND has_function_privilege(r.oid, p.oid, 'EXECUTE'))"
        "   AS api_execute"
        " FROM pg_proc AS p WHERE p.oid = to_regprocedure(:signature)"
    ), {"signature": signature}).mappings().first()
    record = registered.get(("function", signature))
    if row is None:
        return FunctionState(signature, "missing")
    if record is None:
        return FunctionState(signature, "not_ghostsyncs", ["not recorded in ghostsync.objects"])
    differences = []
    if row["prosrc"] != body:
        differences.append("text")
    differences += declared.differences(VOLATILITY.get(row["provolatile"], row["provolatile"]), row["proisstrict"],
                                        row["lanname"], list(row["proconfig"] or []))
    if not row["prosecdef"]:
        differences.append("not SECURITY DEFINER")
    if [c for c in row["proconfig"] or [] if c.startswith("search_path=")] != ['search_path=""']:
        differences.append("search_path not pinned to ''")
    if row["owner"] != record["owner"]:
        differences.append(f"owner {row['owner']} (installed by {record['owner']})")
    if row["public_execute"]:
        differences.append("EXECUTE granted to PUBLIC")
    for role in row["api_execute"] or []:
        differences.append(f"EXECUTE granted to {role}")
    return FunctionState(signature, "differs" if differences else "matches", differences)


def trigger_rows(conn: Connection) -> list[dict[str, Any]]:
    # pg_get_triggerdef qualifies names by the search path: read it under an empty one,
    # then give the transaction its search path back.
    previous = conn.execute(text("SELECT current_setting('search_path')")).scalar_one()
    conn.execute(text("SELECT set_config('search_path', '', true)"))
    try:
        rows = conn.execute(text(
            "SELECT t.tgname AS name, c.oid::regclass::text AS table_name, t.tgenabled AS enabled,"
            " p.oid::regprocedure::text AS function, pg_get_triggerdef(t.oid) AS definition"
            " FROM pg_catalog.pg_trigger AS t"
            " JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid"
            " JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid"
            " WHERE t.tgrelid IN (pg_catalog.to_regclass('auth.users'), pg_catalog.to_regclass('public.users'))"
            "   AND NOT t.tgisinternal"
            " ORDER BY 2, 1"
        )).mappings().all()
    finally:
        conn.execute(text("SELECT set_config('search_path', :previous, true)"), {"previous": previous})
    return [dict(r) for r in rows]


def _triggers(conn: Connection, declared: Declared,
              registered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, TriggerState]:
    found = {(r["name"], r["table_name"]): r for r in trigger_rows(conn)}
    states = {}
    for name, trigger in declared.triggers.items():
        row = found.get((name, trigger.table))
        if row is None:
            states[name] = TriggerState(name, trigger.table, "missing", False)
        elif ("trigger", f"{name} ON {trigger.table}") not in registered:
            states[name] = TriggerState(name, trigger.table, "not_ghostsyncs", False, row["function"])
        else:
            states[name] = TriggerState(name, trigger.table, FIRING.get(row["enabled"], "disabled"),
                                        row["definition"] == trigger.definition, row["function"])
    return states


def _app_triggers(conn: Connection, registered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, AppTrigger]:
    return {
        f"{r['name']} ON {r['table_name']}": AppTrigger(r["name"], r["table_name"], r["function"],
                                                         FIRING.get(r["enabled"], "disabled"))
        for r in trigger_rows(conn)
        if ("trigger", f"{r['name']} ON {r['table_name']}") not in registered
    }


def _tables(conn: Connection, registered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, TableState]:
    states = {}
    for name in ("public.users", "public.cleanup_audit_log", "ghostsync.sync_failures"):
        row = conn.execute(text(
            "SELECT c.relrowsecurity,"
            " (SELECT array_agg(DISTINCT r.rolname || ' ' || g.privilege_type"
            "                   ORDER BY r.rolname || ' ' || g.privilege_type)"
            "  FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS g"
            "  JOIN pg_roles AS r ON r.oid = g.grantee"
            "  WHERE r.rolname IN ('anon', 'authenticated')) AS api_privileges,"
            " (SELECT array_agg(DISTINCT r.rolname || ' ' || g.privilege_type"
            "                   ORDER BY r.rolname || ' ' || g.privilege_type)"
            "  FROM pg_depend AS d JOIN pg_class AS s ON s.oid = d.objid AND s.relkind = 'S'"
            "  CROSS JOIN LATERAL aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) AS g"
            "  JOIN pg_roles AS r ON r.oid = g.grantee"
            "  WHERE d.refobjid = c.oid AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
            "    AND r.rolname IN ('anon', 'authenticated')) AS sequence_privileges"
            " FROM pg_class AS c WHERE c.oid = to_regclass(:name)"
        ), {"name": name}).mappings().first()
        record = registered.get(("table", name))
        if row is None:
            states[name] = TableState(name, False, record["created"] if record else None, False)
            continue
        open_privileges = []
        for grant in row["api_privileges"] or []:
            role, privilege = grant.split(" ", 1)
            if name != "public.users" or role == "anon" or privilege in UNGOVERNED:
                open_privileges.append(f"{privilege} to {role}")
        open_privileges += [f"{g.split(' ', 1)[1]} on its sequence to {g.split(' ', 1)[0]}"
                            for g in row["sequence_privileges"] or []]
        states[name] = TableState(name, True, record["created"] if record else None, bool(row["relrowsecurity"]),
                                  open_privileges)
    return states


__all__ = [
    "AppTrigger", "Attributes", "FunctionState", "Inspection", "TableState", "TriggerState",
    "attribute_differences_sql", "attributes", "function_body", "inspect", "trigger_rows",
]
