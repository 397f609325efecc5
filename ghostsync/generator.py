"""``ghostsync revision``: the skeleton of a follow-up revision, and its test.

``write_follow_up(message, config=..., version_path=...)`` writes two files
and returns their paths:

- the revision, in the shape of ghostsync's own revisions: its docstring,
  ``from ghostsync.migrations import kit``, the revision ids, the functions
  and triggers the branch's head leaves in place as ``PREVIOUS_*`` texts
  (verbatim, from ``chain.declared_at(head)``), copies of them as the new
  texts to edit, a ``COLUMNS`` tuple for new profile columns, the
  ``DECLARES`` to extend, ``upgrade()`` (functions first, then ONE lock step:
  the triggers, then the new columns, added or adopted by
  ``kit.column_sql``) and ``downgrade()`` (the previous texts, exactly);
- its test, which checks on a throwaway Supabase-like database that the
  upgrade installs exactly what the revision declares, that the downgrade
  restores exactly what the previous revision declares (and leaves
  ``ghostsync status`` healthy), and that signups never fail.

With ``data_job=NAME`` the revision is a data revision instead: a batched
job (``kit.backfill``, like ghostsync_0003 and ghostsync_0009) that rewrites
every profile disagreeing with its account on the columns the head
declares synced, in its own revision. DDL that takes strong locks and a
backfill never share a revision, so never a transaction, online or offline.

Where the revision goes, and its id:

- in ghostsync's own repository (the configuration lists only the package's
  versions folder, in a checkout) it joins the chain as the next
  ``ghostsync_NNNN``;
- in a host project (its alembic.ini lists ``ghostsync:migrations/versions``
  and its own folder) it goes into the host's folder, extends ghostsync's
  branch, and its id is ``<slug>_<hex>``, never ``ghostsync_NNNN`` (the next
  ghostsync release will use those). Nothing is ever written into an
  installed package (site-packages).

The test goes into ``tests/`` beside the configuration (the host's
``alembic.ini``; the checkout's root for ghostsync's own chain).
"""

from __future__ import annotations

import os
import re
import secrets
import site
import sysconfig
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic.script import ScriptDirectory

from ghostsync import chain, sync
from ghostsync.chain import Declared
from ghostsync.declarations import Function, Trigger
from ghostsync.errors import GhostsyncError

PACKAGE_VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"
OWN_ID = re.compile(r"^ghostsync_(\d{4,})$")
# alembic_version.version_num is varchar(32)
MAX_ID_LENGTH = 32
_DATE = re.compile(r"^Create Date:[ \t]*(\S+)(?:[ \t]+(\S+))?", re.MULTILINE)
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
WRAP = 96


# -- where the files go --------------------------------------------------------------------------

def installed_location(path: Path) -> bool:
    """True when ``path`` lies inside an installed package directory (site-packages and the like)."""
    resolved = path.resolve()
    if any(part in ("site-packages", "dist-packages") for part in resolved.parts):
        return True
    roots = {sysconfig.get_paths().get(key) for key in ("purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else None)
    return any(root and resolved.is_relative_to(Path(root).resolve()) for root in roots)


@dataclass(frozen=True)
class Target:
    """Where a follow-up goes: its folder, its test's folder, and whether it is ghostsync's own."""

    folder: Path
    tests: Path
    own: bool
    ini: Path


def version_locations(script: ScriptDirectory) -> list[Path]:
    """The configuration's version folders, resolved (package resources included)."""
    return [Path(p).resolve() for p in script._version_locations]


def locate(script: ScriptDirectory, ini: Path, version_path: str | Path | None = None) -> Target:
    """Choose the folder a follow-up goes into; refuse with one line where it must not go."""
    locations = version_locations(script)
    own = PACKAGE_VERSIONS.resolve()
    if version_path is not None:
        folder = Path(version_path).resolve()
    else:
        others = [p for p in locations if p != own]
        writable = [p for p in others if not installed_location(p)]
        if writable:
            folder = writable[0]
        elif others:
            folder = others[0]
        elif own in locations and not installed_location(own):
            folder = own
        else:
            raise GhostsyncError(
                f"ghostsync is installed ({own}) and {ini} lists no versions folder of your own: a follow-up "
                "belongs in your project's folder; list it in version_locations beside "
                "ghostsync:migrations/versions and pass --alembic-config (or GHOSTSYNC_ALEMBIC_CONFIG)")
    if installed_location(folder):
        raise GhostsyncError(
            f"refusing to write into {folder}: it is inside an installed package (site-packages), which the "
            "next install replaces; put the follow-up in your project's versions folder (--version-path, "
            "and list it in version_locations)")
    if folder not in locations:
        raise GhostsyncError(
            f"{folder} is not one of the version_locations of {ini}: Alembic would never run a revision "
            "there; add it to version_locations (beside ghostsync:migrations/versions) first")
    if folder == own:
        return Target(folder=folder, tests=own.parents[2] / "tests", own=True, ini=ini)
    return Target(folder=folder, tests=ini.resolve().parent / "tests", own=False, ini=ini.resolve())


def slug(message: str, limit: int) -> str:
    """Lower-case words of ``message`` joined by ``_``, cut at a word boundary to ``limit`` characters."""
    words = re.sub(r"[^a-z0-9]+", " ", message.lower()).split()
    out = ""
    for word in words:
        candidate = f"{out}_{word}" if out else word
        if len(candidate) > limit:
            break
        out = candidate
    return out or (words[0][:limit] if words else "")


def next_own_id(script: ScriptDirectory) -> tuple[str, str]:
    """The next ``ghostsync_NNNN`` id of ghostsync's own chain, and its file-name number."""
    numbers = [int(m.group(1)) for rev in chain.branch_revisions(script) if (m := OWN_ID.match(rev))]
    number = max(numbers, default=0) + 1
    return f"ghostsync_{number:04d}", f"{number:04d}"


def host_id(script: ScriptDirectory, message: str, folder: Path) -> str:
    """``<slug>_<8 hex>``: unique, at most 32 characters, never ``ghostsync_NNNN`` nor ``ghostsync_...``."""
    base = slug(message, MAX_ID_LENGTH - 9)
    while base.startswith("ghostsync"):
        base = base.removeprefix("ghostsync").lstrip("_")
    base = base or "follow_up"
    known = {rev.revision for rev in script.walk_revisions()}
    for _ in range(20):
        candidate = f"{base}_{secrets.token_hex(4)}"
        if candidate not in known and not (folder / f"{candidate}.py").exists():
            return candidate
    raise GhostsyncError("could not find a free revision id: clean up the versions folder")  # pragma: no cover


def _create_date(parent: str, script: ScriptDirectory, now: datetime | None = None) -> str:
    """Now, but never before the parent's Create Date (export-supabase orders files by it)."""
    now = (now or datetime.now()).replace(microsecond=0)
    doc = script.get_revision(parent).module.__doc__ or ""
    match = _DATE.search(doc)
    if match:
        stamp = match.group(1) + (" " + match.group(2) if match.group(2) else "")
        for fmt in _DATE_FORMATS:
            try:
                parent_date = datetime.strptime(stamp, fmt).replace(microsecond=0)
            except ValueError:
                continue
            if parent_date > now:
                now = parent_date
            break
    return now.strftime("%Y-%m-%d %H:%M:%S")


def ambiguous_at_merge(script: ScriptDirectory, head: str) -> list[str]:
    """Functions and triggers that both parents of the merge ``head`` replaced, differently, and that
    the merge does not declare itself: what the merged head leaves in place there depends on the
    order the parents were applied in, so no previous text can be written for them."""
    rev = script.get_revision(head)
    parents = list(rev._versioned_down_revisions) if rev is not None else []
    if len(parents) < 2:
        return []
    own = chain.declaration(rev)
    settled = {f.signature for f in own.functions} | {t.name for t in own.triggers} | set(own.removes)
    sides = [chain.declared_at(parent, script) for parent in parents]
    lineage = {by: {r.revision for r in chain.path_to(script, by)}
               for side in sides for by in side.declared_by.values()}
    found = []
    keys = sorted({k for side in sides for k in (*side.functions, *side.triggers)} - settled)
    for key in keys:
        versions = {}
        for side in sides:
            text = side.functions[key].create if key in side.functions else (
                side.triggers[key].definition if key in side.triggers else None)
            by = side.declared_by.get(key)
            if text is not None and by is not None:
                versions[by] = text
        # a side whose text an other side's declaring revision descends from was superseded by it
        latest = {by: text for by, text in versions.items()
                  if not any(other != by and by in lineage[other] for other in versions)}
        if len(set(latest.values())) > 1:
            found.append(key)
    return found


# -- Python text ------------------------------------------------------------------------------------

def py_str(text: str) -> str:
    """A double-quoted Python literal for ``text`` (repr() when it needs escapes)."""
    if '"' not in text and "\\" not in text and text.isprintable():
        return f'"{text}"'
    return repr(text)


def raw_block(text: str) -> str:
    """``r\"\"\"...\"\"\"`` holding ``text`` exactly (repr() when a raw block cannot)."""
    if '"""' not in text and not text.endswith(('"', "\\")) and "\r" not in text:
        return 'r"""' + text + '"""'
    return repr(text)


def wrapped(text: str, indent: str, width: int = WRAP) -> str:
    """``text`` as adjacent string literals of at most ``width`` characters, one per line."""
    chunks: list[str] = []
    current = ""
    for token in re.findall(r"\S+\s*|\s+", text):
        if current and len(current) + len(token) > width:
            chunks.append(current)
            current = ""
        current += token
    if current or not chunks:
        chunks.append(current)
    assert "".join(chunks) == text
    return ("\n" + indent).join(py_str(chunk) for chunk in chunks)


def constant_names(functions: Iterable[Function], triggers: Iterable[Trigger]) -> dict[str, str]:
    """A constant name for each function signature and trigger name (HANDLE_NEW_USER, ON_AUTH_USER_CREATED)."""
    names: dict[str, str] = {}
    taken = {"DECLARES", "COLUMNS", "JOB_NAME", "STATEMENTS"}

    def pick(key: str, short: str, longer: str) -> None:
        for candidate in (short, longer, *(f"{longer}_{i}" for i in range(2, 100))):
            candidate = re.sub(r"[^A-Z0-9_]+", "_", candidate.upper()).strip("_") or "OBJECT"
            if candidate[0].isdigit():
                candidate = f"X_{candidate}"
            if candidate not in taken:
                taken.add(candidate)
                names[key] = candidate
                return

    for function in functions:
        qualified = function.signature.split("(", 1)[0]
        schema, _, name = qualified.rpartition(".")
        pick(function.signature, name, f"{schema}_{name}")
    for trigger in triggers:
        short = trigger.name.removeprefix("ghostsync_")
        pick(trigger.name, short, trigger.name)
    return names


def function_literal(constant: str, function: Function) -> str:
    return f"{constant} = kit.Function({py_str(function.signature)}, {raw_block(function.create)})"


def trigger_literal(constant: str, trigger: Trigger) -> str:
    return (f"{constant} = kit.Trigger(\n"
            f"    {py_str(trigger.name)}, {py_str(trigger.table)},\n"
            f"    {wrapped(trigger.definition, '    ')},\n"
            ")")


def _docstring(message: str, revision: str, down_revision: str, create_date: str, body: str) -> str:
    title = " ".join(message.split()) or "Follow-up revision."
    if '"""' in title or title.endswith(("\\", '"')):
        title = title.replace('"', "'").rstrip("\\")
    return (f'"""{title}\n\n'
            f"Revision ID: {revision}\n"
            f"Revises: {down_revision}\n"
            f"Create Date: {create_date}\n\n"
            f"{body}\n"
            '"""\n')


def _joined(parts: list[str]) -> str:
    """The parts, one blank line apart, two before a function."""
    text = ""
    for part in parts:
        if text:
            text += "\n\n\n" if part.startswith("def ") else "\n\n"
        text += part.rstrip("\n")
    return text + "\n"


# -- the revision -----------------------------------------------------------------------------------

DDL_BODY = """\
TODO: say what this revision changes, why, and what its downgrade restores and
keeps (docs/FOLLOW-UP-REVISIONS.md). Written by `ghostsync revision` from what
{down} leaves in place.

- Functions: SECURITY DEFINER, SET search_path = '', every name
  schema-qualified; a trigger function never raises (a failed profile write
  is recorded in ghostsync.sync_failures, so the auth service's write goes
  through). kit.install_function keeps EXECUTE revoked from PUBLIC, anon and
  authenticated and records the function as ghostsync's.
- Lock safety: functions first (they lock no table), then ONE lock step, last:
  the triggers on auth.users, then the new columns of public.users. A busy
  table is retried under the lock budget with no lock held in between. A
  backfill never goes here: it is a revision of its own
  (`ghostsync revision --data-job NAME`), so it never shares a transaction
  with this DDL.
- raw_user_meta_data is written by end users: copy it as display text only,
  bounded in length, never for authorization.

Downgrade restores {down}'s function texts and trigger definitions exactly;
the columns this revision adds keep their values."""


def revision_source(message: str, revision: str, down_revision: str, create_date: str, declared: Declared) -> str:
    """The text of a follow-up revision on top of ``down_revision`` (whose declaration is ``declared``)."""
    functions = list(declared.functions.values())
    triggers = list(declared.triggers.values())
    names = constant_names(functions, triggers)
    out = [_docstring(message, revision, down_revision, create_date, DDL_BODY.format(down=down_revision))]
    out.append(
        "from __future__ import annotations\n\n"
        "from ghostsync.migrations import kit\n\n"
        f"revision = {py_str(revision)}\n"
        f"down_revision = {py_str(down_revision)}\n"
        "branch_labels = None\n"
        "depends_on = None\n"
    )
    out.append(
        f"# -- what {down_revision} leaves in place, verbatim (chain.declared_at({down_revision!r})) --\n"
        "# downgrade() puts these back exactly. Never edit them, never import them from another revision.\n"
        "# When this revision leaves a function or trigger unchanged, delete its PREVIOUS_ text, its new\n"
        "# copy below, and its lines in DECLARES and downgrade().\n"
    )
    for function in functions:
        by = declared.declared_by.get(function.signature, down_revision)
        out.append(f"# declared by {by}\n" + function_literal("PREVIOUS_" + names[function.signature], function))
    for trigger in triggers:
        by = declared.declared_by.get(trigger.name, down_revision)
        out.append(f"# declared by {by}\n" + trigger_literal("PREVIOUS_" + names[trigger.name], trigger))
    out.append(
        "# -- this revision's texts: edit these -------------------------------------------------------\n"
        "# Copies of the texts above. A trigger's definition is exactly what pg_get_triggerdef prints for it\n"
        "# under search_path '' (status compares the two; docs/FOLLOW-UP-REVISIONS.md shows how to get it).\n"
        "# A new function or trigger goes here too, into DECLARES, and into downgrade() as a drop.\n"
    )
    for function in functions:
        out.append(function_literal(names[function.signature], function))
    for trigger in triggers:
        out.append(trigger_literal(names[trigger.name], trigger))
    out.append(
        "# New profile columns the sync writes, each derived from the auth row ({row}), e.g.\n"
        "#   DISPLAY_NAME = kit.Column(\"display_name\", \"pg_catalog.left({row}.raw_user_meta_data ->> 'full_name',"
        " 100)\",\n"
        "#                             \"text\", nullable=True, max_length=100)\n"
        "#   COLUMNS = (DISPLAY_NAME,)\n"
        "# upgrade() adds each, or adopts an existing one only if it takes every value the sync writes\n"
        "# (type, length, NULL), else stops with one line before changing anything. Fill existing\n"
        "# profiles in a data revision of its own: `ghostsync revision --data-job backfill_<column>`.\n"
        "COLUMNS: tuple[kit.Column, ...] = ()\n"
    )
    function_list = "".join(f"        {names[f.signature]},\n" for f in functions)
    trigger_list = "".join(f"        {names[t.name]},\n" for t in triggers)
    out.append(
        "# What ghostsync status, repair, backfill and the drift check read once the database is at this\n"
        "# revision: the columns it syncs, and the functions and triggers it installs. Extend it with\n"
        "# what you add; list in removes= what you drop.\n"
        "DECLARES = kit.Declares(\n"
        "    columns=COLUMNS,\n"
        f"    functions=(\n{function_list}    ),\n"
        f"    triggers=(\n{trigger_list}    ),\n"
        ")\n"
    )
    out.append(
        "def upgrade() -> None:\n"
        "    # Functions first: CREATE OR REPLACE FUNCTION locks no table the auth service or the app uses.\n"
        "    for function in DECLARES.functions:\n"
        "        kit.install_function(function, revision)\n"
        "    # Then ONE lock step, last, so its locks are held only until this revision commits and a busy\n"
        "    # table is retried with no lock held: the triggers on auth.users first, then the columns of\n"
        "    # public.users (the order a signup locks them in, so no signup in flight waits on this step\n"
        "    # while holding what it waits for).\n"
        "    tables = {trigger.table for trigger in DECLARES.triggers} | ({\"public.users\"} if COLUMNS else set())\n"
        "    if tables:\n"
        "        kit.step(\n"
        "            \"\\n\".join([*(kit.trigger_sql(trigger, revision) for trigger in DECLARES.triggers),\n"
        "                       *(kit.column_sql(column, revision) for column in COLUMNS)]),\n"
        "            f\"create the triggers and add the columns of {revision}\",\n"
        "            locks=str(len(tables)),\n"
        "        )\n"
    )
    restore_functions = "".join(
        f"    kit.install_function(PREVIOUS_{names[f.signature]}, "
        f"{py_str(declared.declared_by.get(f.signature, down_revision))})\n" for f in functions)
    restore_triggers = ""
    if triggers:
        tables = sorted({t.table for t in triggers})
        lines = "".join(
            f"        kit.trigger_sql(PREVIOUS_{names[t.name]}, "
            f"{py_str(declared.declared_by.get(t.name, down_revision))}),\n" for t in triggers)
        restore_triggers = (
            "    kit.step(\"\\n\".join((\n"
            f"{lines}"
            f"    )), {py_str(f'restore the triggers of {down_revision} on ' + ', '.join(tables))}, "
            f"locks={py_str(str(len(tables)))})\n")
    out.append(
        "def downgrade() -> None:\n"
        f"    # {down_revision}'s texts, exactly, each recorded again under the revision that declared it:\n"
        "    # functions first, then the triggers in ONE lock step. What this revision adds is dropped here\n"
        "    # (kit.drop_triggers((name, ...), table, functions=(signature, ...))); its columns stay, with\n"
        "    # their values: no downgrade deletes data.\n"
        + (restore_functions + restore_triggers or "    pass\n")
    )
    return _joined(out)


# -- the data revision ------------------------------------------------------------------------------

DATA_BODY = """\
{todo}

A batched job in a revision of its own, so it never shares a transaction with
DDL: it walks auth.users in keyset batches, each its own short transaction
online (one DO block offline), and rewrites the synced columns of every
profile that disagrees with its account. It locks those accounts FOR SHARE
while it writes, so an account changed meanwhile is written with its newest
values, by this job or by the update sync, whichever commits last. It never
creates or deletes a profile.

Every run writes one cleanup_audit_log row, job_name '{job}'
(records_affected = profiles rewritten); `ghostsync status` shows its last run.
Settings: -x batch_size=N / GHOSTSYNC_BATCH_SIZE (default 5000), -x dead_after.

Downgrade changes nothing: the rewritten values are the accounts' own."""

MARK_INTERRUPTED_SQL = r"""
UPDATE public.cleanup_audit_log AS l
SET status = 'interrupted',
    finished_at = now(),
    details = l.details || jsonb_build_object('error', 'the run ended without finishing')
WHERE l.job_name = :job
  AND l.status = 'running'
  AND (
    NOT EXISTS (
      SELECT 1 FROM pg_stat_activity AS a
      WHERE a.pid = (l.details ->> 'pid')::int
        AND a.backend_start = (l.details ->> 'backend_start')::timestamptz
    )
    OR coalesce((l.details ->> 'heartbeat_at')::timestamptz, l.started_at)
       < clock_timestamp() - make_interval(secs => CAST(:dead_after AS double precision))
  )
"""

START_SQL = r"""
INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
SELECT :job, 'running', 0, clock_timestamp(),
       jsonb_build_object('mode', CAST(:run_mode AS text), 'pid', pg_backend_pid(),
                          'backend_start', a.backend_start, 'batches', 0,
                          'heartbeat_at', clock_timestamp())
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
RETURNING id
"""

BATCH_SQL = r"""
WITH batch AS (
  SELECT u.id
  FROM auth.users AS u
  WHERE CAST(:after AS uuid) IS NULL OR u.id > CAST(:after AS uuid)
  ORDER BY u.id
  LIMIT :batch_size
),
stale AS (
  SELECT u.*
  FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
  WHERE u.id IN (SELECT b.id FROM batch AS b)
    AND {stale}
  FOR SHARE OF u
),
repaired AS (
  UPDATE public.users AS p
  SET {assignments}
  FROM stale AS s
  WHERE p.id = s.id
  RETURNING 1
),
progress AS (
  UPDATE public.cleanup_audit_log
  SET records_affected = records_affected + (SELECT count(*) FROM repaired),
      details = details || jsonb_build_object(
        'batches', coalesce((details ->> 'batches')::int, 0) + 1,
        'last_id', (SELECT id FROM batch ORDER BY id DESC LIMIT 1),
        'heartbeat_at', clock_timestamp())
  WHERE id = :run_id AND EXISTS (SELECT 1 FROM batch)
  RETURNING 1
)
SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM repaired) AS repaired,
       (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM progress) AS logged
"""

FINISH_SQL = r"""
UPDATE public.cleanup_audit_log
SET status = :run_status,
    finished_at = clock_timestamp(),
    details = CASE WHEN CAST(:run_error AS text) IS NULL THEN details
                   ELSE details || jsonb_build_object('error', CAST(:run_error AS text)) END
WHERE id = :run_id
"""

OFFLINE_SQL = r"""
DO $ghostsync$
DECLARE
  run_id bigint;
  -- "id > after_id" alone, so the plan PL/pgSQL caches keeps the index range
  -- scan; the nil uuid, which no walk step passes, is handled first.
  after_id uuid := '00000000-0000-0000-0000-000000000000';
  last_id uuid;
  n_repaired bigint;
  total bigint := 0;
  n_batches int := 0;
BEGIN
  INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, started_at, details)
  VALUES ({job}, 'running', 0, clock_timestamp(),
          jsonb_build_object('mode', 'offline', 'pid', pg_backend_pid(), 'batches', 0))
  RETURNING id INTO run_id;
  UPDATE public.users AS p
  SET {first_assignments}
  FROM (SELECT * FROM auth.users AS a WHERE a.id = after_id FOR SHARE) AS u
  WHERE p.id = u.id
    AND {first_stale};
  GET DIAGNOSTICS total = ROW_COUNT;
  LOOP
    WITH batch AS (
      SELECT u.id
      FROM auth.users AS u
      WHERE u.id > after_id
      ORDER BY u.id
      LIMIT {{batch_size}}
    ),
    stale AS (
      SELECT u.*
      FROM auth.users AS u JOIN public.users AS p ON p.id = u.id
      WHERE u.id IN (SELECT b.id FROM batch AS b)
        AND {stale}
      FOR SHARE OF u
    ),
    repaired AS (
      UPDATE public.users AS p
      SET {assignments}
      FROM stale AS s
      WHERE p.id = s.id
      RETURNING 1
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM repaired)
    INTO last_id, n_repaired;
    EXIT WHEN last_id IS NULL;
    after_id := last_id;
    total := total + n_repaired;
    n_batches := n_batches + 1;
  END LOOP;
  UPDATE public.cleanup_audit_log
  SET status = 'succeeded', records_affected = total, finished_at = clock_timestamp(),
      details = details || jsonb_build_object('batches', n_batches, 'last_id', after_id)
  WHERE id = run_id;
END
$ghostsync$;
"""

JOB_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _braces(sql: str) -> str:
    """Escape ``{``/``}`` for str.format (the offline template fills in ``{batch_size}`` only)."""
    return sql.replace("{", "{{").replace("}", "}}")


def data_revision_source(message: str, revision: str, down_revision: str, create_date: str, declared: Declared,
                         job: str) -> str:
    """The text of a data revision: a batched job rewriting every stale profile, frozen as SQL text
    built now from what ``down_revision`` declares synced."""
    if not JOB_NAME_PATTERN.match(job):
        raise GhostsyncError(f"job name {job!r}: use lower-case letters, digits and _ (e.g. backfill_display_name)")
    if not declared.synced_columns:
        raise GhostsyncError(f"{down_revision} declares no synced column: there is nothing for a job to rewrite")
    joiner = ",\n      "
    stale = sync.stale_condition(declared, "p", "u").replace(") OR p.", ")\n     OR p.")
    assignments = joiner.join(sync.update_assignments(declared, "s"))
    offline = OFFLINE_SQL.format(
        job=_sql_quote(job),
        first_assignments=_braces(joiner.join(sync.update_assignments(declared, "u"))),
        first_stale=_braces(stale),
        stale=_braces(stale.replace("\n", "\n        ")),
        assignments=_braces(assignments.replace("\n", "\n    ")),
    )
    batch = BATCH_SQL.format(stale=stale, assignments=assignments)
    columns = ", ".join(c.name for c in declared.synced_columns)
    todo = textwrap.fill(f"TODO: say which profiles this job rewrites and why. Written by `ghostsync revision "
                         f"--data-job {job}` from what {down_revision} declares synced ({columns}).", width=78)
    body = DATA_BODY.format(job=job, todo=todo)
    out = [_docstring(message, revision, down_revision, create_date, body)]
    out.append(
        "from __future__ import annotations\n\n"
        "from ghostsync.migrations import kit\n\n"
        f"revision = {py_str(revision)}\n"
        f"down_revision = {py_str(down_revision)}\n"
        "branch_labels = None\n"
        "depends_on = None\n"
    )
    out.append(
        f"JOB_NAME = {py_str(job)}\n"
        "DEFAULT_BATCH_SIZE = 5000\n"
        "# Batches take well under a second; a run silent for a minute is dead.\n"
        'DEFAULT_DEAD_AFTER = "60s"\n'
    )
    out.append(
        "# A run is dead when the server session that started it is gone, or (through a transaction-mode\n"
        "# pooler, whose server sessions outlive their clients) when it has made no progress for :dead_after.\n"
        f"MARK_INTERRUPTED = {raw_block(MARK_INTERRUPTED_SQL)}"
    )
    out.append(f"START = {raw_block(START_SQL)}")
    comment = textwrap.wrap(f"One batch, one statement: rewrite the stale profiles among the next :batch_size "
                            f"accounts by id (synced columns as {down_revision} declares them: {columns}) and "
                            "log the progress, atomically.", width=98)
    out.append("".join(f"# {line}\n" for line in comment) + f"BATCH = {raw_block(batch)}")
    out.append(f"FINISH = {raw_block(FINISH_SQL)}")
    out.append(
        "STATEMENTS = kit.BackfillStatements(\n"
        "    mark_interrupted=MARK_INTERRUPTED, start=START, batch=BATCH, finish=FINISH\n"
        ")"
    )
    out.append(
        "# Offline the batches run inside the database, in this revision's own transaction.\n"
        f"OFFLINE_TEMPLATE = {raw_block(offline)}"
    )
    out.append("DECLARES = kit.Declares(jobs=(JOB_NAME,))\n")
    out.append(
        "def upgrade() -> None:\n"
        "    kit.backfill(STATEMENTS, OFFLINE_TEMPLATE, job_name=JOB_NAME, default_batch_size=DEFAULT_BATCH_SIZE,\n"
        "                 default_dead_after=DEFAULT_DEAD_AFTER)\n"
    )
    out.append(
        "def downgrade() -> None:\n"
        "    # The rewritten values are the accounts' own: nothing to undo.\n"
        "    pass\n"
    )
    return _joined(out)


# -- the test ---------------------------------------------------------------------------------------

TEST_HEAD = '''\
"""Tests of {kind} {revision}, written beside it by `ghostsync revision`.

They run on throwaway Supabase-like databases: the ``supabase_db`` fixture of
the ``ghostsync[testing]`` pytest plugin, on every PostgreSQL version it finds.
Keep them, and add what this revision itself promises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from ghostsync import chain, findings, status
from ghostsync.testing.fixtures import SupabaseDatabase

REVISION = {revision_literal}
ALEMBIC_INI = {ini_expression}


@pytest.fixture
def database(supabase_db: SupabaseDatabase) -> SupabaseDatabase:
    return supabase_db


def script() -> ScriptDirectory:
    return chain.script_directory(ALEMBIC_INI)


def previous() -> str:
    down = script().get_revision(REVISION).down_revision
    assert isinstance(down, str), f"{{REVISION}} should revise one revision, not {{down!r}}"
    return down


# The throwaway database reaches the env.py as sqlalchemy.url, -x database_url and DATABASE_URL; a connection
# the env.py makes anywhere else fails the test before anything runs there (ghostsync.testing.guard).
def upgrade(db: SupabaseDatabase, target: str) -> None:
    db.upgrade(target, alembic_ini=ALEMBIC_INI)


def downgrade(db: SupabaseDatabase, target: str) -> None:
    db.downgrade(target, alembic_ini=ALEMBIC_INI)


def collect(db: SupabaseDatabase) -> status.Status:
    with db.engine().connect() as conn:
        return status.collect(conn, script=script())


def healthy(found: status.Status) -> None:
    assert not found.problems, [p.message for p in found.problems]
    assert {{w.code for w in found.warnings}} <= {{findings.BEHIND_HEAD.code}}, [w.message for w in found.warnings]


def signups_never_fail(db: SupabaseDatabase) -> None:
    """Every kind of signup, change and delete goes through and leaves its profile right; a profile
    write the app's table refuses is recorded, and the signup still commits."""
    with db.auth() as auth:
        email = auth.signup(email="ann@example.com", user_meta={{"full_name": "Ann Example"}})
        confirmed = auth.signup(email="bo@example.com", confirmed=True, user_meta={{"full_name": "Bo"}})
        phone = auth.signup(phone="+15550001111")
        anonymous = auth.signup(anonymous=True)
        sso = auth.signup(email="cy@example.com", sso=True, confirmed=True)
        auth.confirm_email(email)
        auth.soft_delete(confirmed)
        auth.hard_delete(phone)
    found = collect(db)
    healthy(found)
    assert (found.ghosts, found.orphans, found.stale_profiles, found.failed_syncs) == (0, 0, 0, 0)
    assert db.value("SELECT count(*) FROM public.users WHERE id IN (%s, %s, %s)",
                    (str(email), str(anonymous), str(sso))) == 3
    db.sql("ALTER TABLE public.users ADD CONSTRAINT app_refuses_new_profiles CHECK (false) NOT VALID")
    try:
        with db.auth() as auth:
            refused = auth.signup(email="refused@example.com")
    finally:
        db.sql("ALTER TABLE public.users DROP CONSTRAINT app_refuses_new_profiles")
    assert db.value("SELECT count(*) FROM auth.users WHERE id = %s", (str(refused),)) == 1
    assert db.value("SELECT count(*) FROM ghostsync.sync_failures WHERE user_id = %s", (str(refused),)) == 1


def test_renders_offline(database: SupabaseDatabase) -> None:
    sql = database.offline_sql(f"{{previous()}}:{{REVISION}}", alembic_ini=ALEMBIC_INI)
    assert f"version_num='{{REVISION}}'" in sql
'''

TEST_DDL = '''

def catalog(db: SupabaseDatabase, signatures: list[str], triggers: list[tuple[str, str]]) -> dict[str, Any]:
    """What the database holds: each function's text, each trigger's definition (None: missing)."""
    found: dict[str, Any] = {{}}
    for signature in signatures:
        found[signature] = db.value(
            "SELECT prosrc FROM pg_catalog.pg_proc WHERE oid = pg_catalog.to_regprocedure(%s)", (signature,))
    for name, table in triggers:
        found[name] = db.value(
            "SET search_path = ''; SELECT pg_catalog.pg_get_triggerdef(t.oid) FROM pg_catalog.pg_trigger AS t"
            " WHERE t.tgrelid = pg_catalog.to_regclass(%s) AND t.tgname = %s AND NOT t.tgisinternal",
            (table, name))
    return found


def declared(revision: str, signatures: list[str], triggers: list[tuple[str, str]]) -> dict[str, Any]:
    """What ``revision`` declares for the same objects (None: not there at that revision)."""
    at = chain.declared_at(revision, script())
    found: dict[str, Any] = {{}}
    for signature in signatures:
        found[signature] = at.body(signature) if signature in at.functions else None
    for name, _ in triggers:
        found[name] = at.triggers[name].definition if name in at.triggers else None
    return found


def objects() -> tuple[list[str], list[tuple[str, str]]]:
    """Every function and trigger declared before or at this revision."""
    before, after = chain.declared_at(previous(), script()), chain.declared_at(REVISION, script())
    signatures = sorted(set(before.functions) | set(after.functions))
    triggers = sorted({{(t.name, t.table) for t in (*before.triggers.values(), *after.triggers.values())}})
    return signatures, triggers


def test_upgrade_installs_what_it_declares_and_downgrade_restores_the_previous_texts_exactly(
        database: SupabaseDatabase) -> None:
    signatures, triggers = objects()
    upgrade(database, previous())
    before = catalog(database, signatures, triggers)
    assert before == declared(previous(), signatures, triggers)

    upgrade(database, REVISION)
    assert catalog(database, signatures, triggers) == declared(REVISION, signatures, triggers)
    found = collect(database)
    assert found.revision == REVISION
    healthy(found)

    downgrade(database, previous())
    assert catalog(database, signatures, triggers) == before, "the downgrade restores the previous texts exactly"
    found = collect(database)
    assert found.revision == previous()
    healthy(found)
    assert [w.code for w in found.warnings] == [findings.BEHIND_HEAD.code]

    upgrade(database, REVISION)
    assert catalog(database, signatures, triggers) == declared(REVISION, signatures, triggers)


def test_signups_never_fail(database: SupabaseDatabase) -> None:
    upgrade(database, REVISION)
    signups_never_fail(database)
'''

TEST_DATA = '''

def test_the_job_rewrites_every_stale_profile_and_its_downgrade_changes_nothing(database: SupabaseDatabase) -> None:
    job = script().get_revision(REVISION).module.JOB_NAME
    upgrade(database, previous())
    with database.auth() as auth:
        users = [auth.signup(email=f"user{{i}}@example.com", confirmed=i % 2 == 0,
                             user_meta={{"full_name": f"User {{i}}"}}) for i in range(5)]
    # The accounts change while the sync's triggers are off (as a restore would): stale profiles.
    database.sql("SET session_replication_role = replica; "
                 "UPDATE auth.users SET email = 'changed.' || email, "
                 "raw_user_meta_data = raw_user_meta_data || '{{\\"full_name\\": \\"Changed\\"}}' "
                 "WHERE email IS NOT NULL; SET session_replication_role = origin")
    assert collect(database).stale_profiles == len(users)

    upgrade(database, REVISION)
    found = collect(database)
    assert found.stale_profiles == 0
    healthy(found)
    assert found.jobs[job] is not None and found.jobs[job]["status"] == "succeeded"
    assert found.jobs[job]["records_affected"] == len(users)

    rewritten = database.sql("SELECT * FROM public.users ORDER BY id")
    downgrade(database, previous())
    assert database.sql("SELECT * FROM public.users ORDER BY id") == rewritten
    healthy(collect(database))


def test_signups_never_fail(database: SupabaseDatabase) -> None:
    upgrade(database, REVISION)
    signups_never_fail(database)
'''


def revision_test_source(revision: str, target: Target, data: bool) -> str:
    """The test of ``revision``, written into ``target.tests``."""
    if target.own:
        ini_expression = "chain.DEFAULT_INI"
    else:
        relative = Path(os.path.relpath(target.ini, target.tests)).as_posix()
        ini_expression = f"(Path(__file__).resolve().parent / {py_str(relative)}).resolve()"
    head = TEST_HEAD.format(revision=revision, revision_literal=py_str(revision), ini_expression=ini_expression,
                            kind="data revision" if data else "follow-up")
    source = head + (TEST_DATA if data else TEST_DDL).format()
    if target.own:
        source = source.replace("from pathlib import Path\n", "")
    else:
        # in a host project ghostsync is an installed package: one block with the other third-party imports
        source = source.replace("from alembic.script import ScriptDirectory\n\nfrom ghostsync",
                                "from alembic.script import ScriptDirectory\nfrom ghostsync")
    if data:
        source = source.replace("from typing import Any\n", "")
    return source


# -- writing ----------------------------------------------------------------------------------------

def write_follow_up(message: str, config: str | Path | None = None, version_path: str | Path | None = None, *,
                    data_job: str | None = None, tests_path: str | Path | None = None) -> list[Path]:
    """Write a follow-up revision on top of ghostsync's branch head, and its test; return both paths.

    ``config``: the Alembic configuration (``--alembic-config``; default
    ``GHOSTSYNC_ALEMBIC_CONFIG``, else the packaged one). ``version_path``:
    the folder for the revision (default: the configuration's first version
    folder that is not inside an installed package). ``data_job``: write a
    data revision running that job instead. ``tests_path``: the folder for
    the test (default: ``tests/`` beside the configuration, or the
    checkout's for ghostsync's own chain). Refuses with one line
    (``GhostsyncError``) to write into an installed package, into a folder
    Alembic would not read, or on a branch with more than one head.
    """
    if not message.strip():
        raise GhostsyncError("a revision needs a message (-m 'what it changes')")
    try:
        ini = chain.config_path(config)
        script = chain.script_directory(ini)
        down_revision = chain.head(script)
    except chain.ChainError as exc:
        raise GhostsyncError(str(exc)) from None
    ambiguous = ambiguous_at_merge(script, down_revision)
    if ambiguous:
        raise GhostsyncError(
            f"the merge {down_revision} leaves {', '.join(ambiguous)} ambiguous: both of its parents replaced "
            "them differently; give the merge revision the combined text (declare it in its DECLARES and "
            "install it in its upgrade()), then write the follow-up")
    target = locate(script, ini, version_path)
    if tests_path is not None:
        target = Target(folder=target.folder, tests=Path(tests_path).resolve(), own=target.own, ini=target.ini)
    if target.own:
        revision, number = next_own_id(script)
        filename = f"{number}_{slug(message, 40) or 'follow_up'}.py"
        test_name = f"test_revision_{number}_{slug(message, 40) or 'follow_up'}.py"
    else:
        revision = host_id(script, message, target.folder)
        filename = f"{revision}.py"
        test_name = f"test_{revision}.py"
    declared = chain.declared_at(down_revision, script)
    create_date = _create_date(down_revision, script)
    if data_job is not None:
        source = data_revision_source(message, revision, down_revision, create_date, declared, data_job)
    else:
        source = revision_source(message, revision, down_revision, create_date, declared)
    path = target.folder / filename
    test_path = target.tests / test_name
    for existing in (path, test_path):
        if existing.exists():
            raise GhostsyncError(f"{existing} exists already: nothing written")
    target.tests.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    test_path.write_text(revision_test_source(revision, target, data_job is not None))
    return [path, test_path]


__all__ = [
    "PACKAGE_VERSIONS",
    "Target",
    "data_revision_source",
    "installed_location",
    "locate",
    "revision_source",
    "revision_test_source",
    "write_follow_up",
]
