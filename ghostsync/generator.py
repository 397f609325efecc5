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

The three texts are Mako templates shipped as package data
(``ghostsync/templates``: ``revision.py.mako``, ``data_revision.py.mako``,
``revision_test.py.mako``), rendered by Alembic's own renderer of
``script.py.mako`` (``render``); this module computes the values that go
into them (ids, literals of the head's functions and triggers, the data
job's SQL fragments from ``ghostsync.sync``).
"""

from __future__ import annotations

import os
import re
import secrets
import site
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import coerce_resource_to_filename, template_to_file

from ghostsync import chain, sync
from ghostsync.chain import Declared
from ghostsync.errors import GhostsyncError
from ghostsync.migrations.declarations import Function, Trigger

PACKAGE_VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"
# the revision, data revision and test templates (package data)
TEMPLATES = Path(__file__).resolve().parent / "templates"
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
    """The configuration's version folders, resolved (package resources included), as Alembic reads
    them: ``version_locations``, else the script directory's ``versions`` folder."""
    if not script.version_locations:
        return [Path(script.dir, "versions").resolve()]
    return [Path(coerce_resource_to_filename(str(p))).resolve() for p in script.version_locations]


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
    parents = list(chain.down_revisions(rev)) if rev is not None else []
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


def _title(message: str) -> str:
    """The docstring's first line: ``message`` on one line, with nothing that would end the docstring."""
    title = " ".join(message.split()) or "Follow-up revision."
    if '"""' in title or title.endswith(("\\", '"')):
        title = title.replace('"', "'").rstrip("\\")
    return title


def render(template: str, **context: Any) -> str:
    """The package's template ``template`` (``ghostsync/templates``, shipped as package data) rendered with
    ``context`` by Alembic's own renderer of ``script.py.mako`` (``alembic.util.template_to_file``: Mako; a
    template error is a CommandError). It renders into a file, so the text is read back from one."""
    with tempfile.TemporaryDirectory(prefix="ghostsync-render-") as folder:
        rendered = Path(folder) / template.removesuffix(".mako")
        template_to_file(str(TEMPLATES / template), str(rendered), "utf-8", **context)
        return rendered.read_text(encoding="utf-8")


# -- the revision -----------------------------------------------------------------------------------

def revision_source(message: str, revision: str, down_revision: str, create_date: str, declared: Declared) -> str:
    """The text of a follow-up revision on top of ``down_revision`` (whose declaration is ``declared``)."""
    functions = list(declared.functions.values())
    triggers = list(declared.triggers.values())
    names = constant_names(functions, triggers)

    def by(key: str) -> str:
        return declared.declared_by.get(key, down_revision)

    tables = sorted({t.table for t in triggers})
    return render(
        "revision.py.mako",
        title=_title(message), revision=revision, down_revision=down_revision, create_date=create_date,
        revision_literal=py_str(revision), down_literal=py_str(down_revision), down_repr=repr(down_revision),
        previous=[(by(f.signature), function_literal("PREVIOUS_" + names[f.signature], f)) for f in functions]
        + [(by(t.name), trigger_literal("PREVIOUS_" + names[t.name], t)) for t in triggers],
        current=[function_literal(names[f.signature], f) for f in functions]
        + [trigger_literal(names[t.name], t) for t in triggers],
        function_constants=[names[f.signature] for f in functions],
        trigger_constants=[names[t.name] for t in triggers],
        restore_functions=[(names[f.signature], py_str(by(f.signature))) for f in functions],
        restore_triggers=[(names[t.name], py_str(by(t.name))) for t in triggers],
        restore_what=py_str(f"restore the triggers of {down_revision} on " + ", ".join(tables)),
        restore_locks=py_str(str(len(tables))),
    )


# -- the data revision ------------------------------------------------------------------------------

JOB_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _braces(sql: str) -> str:
    """Escape ``{``/``}`` for str.format (the kit fills in the offline template's ``{batch_size}`` only)."""
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
    fragments = {
        "stale": stale,
        "assignments": assignments,
        "offline_first_assignments": _braces(joiner.join(sync.update_assignments(declared, "u"))),
        "offline_first_stale": _braces(stale),
        "offline_stale": _braces(stale.replace("\n", "\n        ")),
        "offline_assignments": _braces(assignments.replace("\n", "\n    ")),
    }
    if any('"""' in text or "\r" in text for text in fragments.values()):
        # they go into r"""...""" blocks
        raise GhostsyncError(f"{down_revision} declares a synced column whose SQL holds \"\"\" or a carriage "
                             "return: write this data revision by hand")
    columns = ", ".join(c.name for c in declared.synced_columns)
    todo = textwrap.fill(f"TODO: say which profiles this job rewrites and why. Written by `ghostsync revision "
                         f"--data-job {job}` from what {down_revision} declares synced ({columns}).", width=78)
    comment = textwrap.wrap(f"One batch, one statement: rewrite the stale profiles among the next :batch_size "
                            f"accounts by id (synced columns as {down_revision} declares them: {columns}) and "
                            "log the progress, atomically.", width=98)
    return render(
        "data_revision.py.mako",
        title=_title(message), revision=revision, down_revision=down_revision, create_date=create_date,
        revision_literal=py_str(revision), down_literal=py_str(down_revision), job=job, job_literal=py_str(job),
        job_sql=_sql_quote(job), todo=todo, batch_comment="\n".join(f"# {line}" for line in comment), **fragments,
    )


# -- the test ---------------------------------------------------------------------------------------

def revision_test_source(revision: str, target: Target, data: bool) -> str:
    """The test of ``revision``, written into ``target.tests``."""
    if target.own:
        ini_expression = "chain.DEFAULT_INI"
    else:
        relative = Path(os.path.relpath(target.ini, target.tests)).as_posix()
        ini_expression = f"(Path(__file__).resolve().parent / {py_str(relative)}).resolve()"
    # in a host project ghostsync is an installed package: its import joins the other third-party ones
    return render("revision_test.py.mako", revision=revision, revision_literal=py_str(revision),
                  ini_expression=ini_expression, kind="data revision" if data else "follow-up", own=target.own,
                  data=data)


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
