"""The profile columns a revision's job writes, rendered for the public.users the database has.

A revision's job (0003's backfill, 0009's resync) names the profile columns it
writes as ``Write``s and leaves placeholders in its frozen statements; they
are filled in when the job runs, from the columns public.users has:

- ``{columns}``: ``, col`` for each written column the table has;
- ``{values:ROW}``: ``, value`` for each, from the auth row ``ROW``;
- ``{stale:P:U}``: true where profile ``P`` disagrees with auth row ``U`` on a
  compared column the table has (``false`` when it has none);
- ``{sets:ROW}``: ``col = value`` for each column a rewrite sets, from ``ROW``
  (``id = ROW.id`` when the table has none, a statement that then changes nothing).

An adopted table other users can read may lack synced columns (revision 0001
adds none there): the job writes only what the table has. A ``timestamp
without time zone`` column is written and compared as UTC, whatever the
session's TimeZone. Offline (``--sql``) the statements are rendered for the
full shape ghostsync creates (every column, ``timestamptz``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

LOCAL_TIMESTAMP = "timestamp without time zone"
_PLACEHOLDER = re.compile(r"\{(columns|values|stale|sets)((?::[A-Za-z_]+)*)\}")


@dataclass(frozen=True)
class Write:
    """A profile column a job writes: ``value`` over the auth row ``{row}``; ``compared``: a difference makes
    the profile stale; ``on_rewrite``: what a rewrite sets (None: the value; "" : left as it is)."""

    name: str
    value: str
    compared: bool = False
    on_rewrite: str | None = None


def table_columns(conn: Connection) -> dict[str, str]:
    """public.users's columns and their types."""
    return {name: kind for name, kind in conn.execute(text(
        "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute AS a "
        "WHERE a.attrelid = pg_catalog.to_regclass('public.users') AND a.attnum > 0 AND NOT a.attisdropped"))}


def full_shape(writes: tuple[Write, ...]) -> dict[str, str]:
    """The columns of the table ghostsync creates, for the offline script."""
    return {w.name: "timestamp with time zone" for w in writes}


def render(sql: str, writes: tuple[Write, ...], found: dict[str, str]) -> str:
    """``sql`` with its placeholders filled for a table whose columns are ``found``."""
    present = [w for w in writes if w.name in found]

    def utc(w: Write, value: str) -> str:
        return f"(({value}) AT TIME ZONE 'UTC')" if found[w.name] == LOCAL_TIMESTAMP else value

    def fill(match: re.Match[str]) -> str:
        kind, args = match.group(1), match.group(2).split(":")[1:]
        if kind == "columns":
            return "".join(f", {w.name}" for w in present)
        if kind == "values":
            return "".join(f", {utc(w, w.value.format(row=args[0]))}" for w in present)
        if kind == "stale":
            parts = [f"{args[0]}.{w.name} IS DISTINCT FROM ({utc(w, w.value.format(row=args[1]))})"
                     for w in present if w.compared]
            return "(" + " OR ".join(parts) + ")" if parts else "false"
        sets = [f"{w.name} = {utc(w, (w.on_rewrite if w.on_rewrite is not None else w.value).format(row=args[0]))}"
                for w in present if w.on_rewrite != ""]
        return ", ".join(sets) if sets else f"id = {args[0]}.id"

    return _PLACEHOLDER.sub(fill, sql)


def render_all(obj: Any, writes: tuple[Write, ...], found: dict[str, str]) -> Any:
    """Every string field of a (nested) frozen dataclass of statements, rendered."""
    if isinstance(obj, str):
        return render(obj, writes, found)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: render_all(getattr(obj, f.name), writes, found)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj
