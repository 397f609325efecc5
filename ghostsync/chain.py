"""The revision chain and what each revision declares.

Each revision declares, as data next to its frozen SQL (``DECLARES``, a
``kit.Declares``), the profile columns it syncs, the functions and triggers
it installs or removes, and the data jobs it runs. Walking ghostsync's
branch from its base to a revision and applying each revision's
declaration gives what that revision leaves in place: ``declared_at``.
``status``, ``repair``, ``backfill`` and the drift check read the
declaration of the revision the database is at.

The chain is found through an Alembic configuration: the packaged one
(``ghostsync/migrations/alembic.ini``) by default, or a host project's
(``--alembic-config`` / ``GHOSTSYNC_ALEMBIC_CONFIG``), whose
``version_locations`` list ``ghostsync:migrations/versions`` beside its own
folders, so a host's follow-up revisions on ghostsync's branch count too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from ghostsync.migrations.declarations import Column, Declares, Function, Trigger

DEFAULT_INI = Path(__file__).resolve().parent / "migrations" / "alembic.ini"
CONFIG_ENV = "GHOSTSYNC_ALEMBIC_CONFIG"
BASE_REVISION = "ghostsync_0001"
_BODY = re.compile(r"AS \$function\$(.*?)\$function\$", re.DOTALL)


class ChainError(RuntimeError):
    """The chain cannot be read or does not say what is needed; the message says why."""


def config_path(given: str | Path | None = None) -> Path:
    """``given``, else ``GHOSTSYNC_ALEMBIC_CONFIG``, else the packaged configuration."""
    chosen = given or os.environ.get(CONFIG_ENV) or DEFAULT_INI
    path = Path(chosen)
    if not path.is_file():
        raise ChainError(f"no Alembic configuration at {path}: check --alembic-config / {CONFIG_ENV}")
    return path


def alembic_config(given: str | Path | None = None) -> Config:
    config = Config(str(config_path(given)))
    config.attributes["configure_logger"] = False
    return config


def script_directory(given: str | Path | Config | None = None) -> ScriptDirectory:
    config = given if isinstance(given, Config) else alembic_config(given)
    try:
        return ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ChainError(f"cannot read the revision chain: {exc}") from None


def function_body(create_statement: str) -> str:
    """The text between ``AS $function$`` and ``$function$``: what pg_proc.prosrc stores."""
    match = _BODY.search(create_statement)
    if match is None:
        raise ValueError("no $function$ body in statement")
    return match.group(1)


def branch_revisions(script: ScriptDirectory) -> dict[str, Script]:
    """Every revision on ghostsync's branch: ghostsync_0001 and all that descend from it
    (a host project's follow-ups included), by id."""
    try:
        base = script.get_revision(BASE_REVISION)
    except Exception:
        base = None
    if base is None:
        raise ChainError(f"the chain has no {BASE_REVISION}: is ghostsync:migrations/versions in version_locations?")
    found: dict[str, Script] = {}
    for rev in script.walk_revisions():
        if rev.revision == BASE_REVISION or BASE_REVISION in _ancestors(script, rev.revision):
            found[rev.revision] = rev
    return found


def _named(identifiers: str | Sequence[str] | None) -> tuple[str, ...]:
    # Revision.down_revision and .dependencies are None, one identifier or a tuple of them
    if identifiers is None:
        return ()
    return (identifiers,) if isinstance(identifiers, str) else tuple(identifiers)


def down_revisions(rev: Script) -> tuple[str, ...]:
    """The revisions ``rev`` revises (two or more for a merge), its ``depends_on`` left out."""
    return _named(rev.down_revision)


def _ancestors(script: ScriptDirectory, revision: str, *, through_dependencies: bool = False) -> set[str]:
    """Every revision below ``revision``: through its down revisions only (what puts a revision on a
    branch: depends_on orders a host's revision after ours, it does not put it on our branch), or also
    through each ``depends_on`` (what a database at ``revision`` must hold)."""
    seen: set[str] = set()
    todo = [revision]
    while todo:
        current = script.get_revision(todo.pop())
        if current is None:
            continue
        below = _named(current.down_revision)
        if through_dependencies:
            # a dependency may name a branch label or a short id: resolved as Alembic resolves it
            below += tuple(s.revision for s in script.get_revisions(_named(current.dependencies)) if s is not None)
        for parent in below:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def knows(script: ScriptDirectory, revision: str) -> bool:
    """Whether ``revision`` is a revision of this configuration's chain (any branch)."""
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def standing(script: ScriptDirectory, version_rows: Iterable[str]) -> list[str]:
    """Where ghostsync's branch stands in a database whose ``alembic_version`` holds ``version_rows``.

    A row holds its revision and everything below it, through down revisions
    and ``depends_on`` alike: after ``alembic downgrade
    ghostsync@ghostsync_0001`` in a host project the table keeps only the
    host's row, whose revision depends on ghostsync_0001, and ghostsync is at
    ghostsync_0001. The answer is the newest revisions of ghostsync's branch so
    held (none: not installed; two or more: unmerged heads), sorted. Rows this
    configuration does not know hold nothing.
    """
    members = branch_revisions(script)
    held: set[str] = set()
    for row in version_rows:
        if not knows(script, row):  # a row of another configuration, or of a newer ghostsync
            continue
        held |= {row} | _ancestors(script, row, through_dependencies=True)
    ours = held & set(members)
    below = set().union(*(_ancestors(script, rev) for rev in ours)) if ours else set()
    return sorted(ours - below)


def heads(script: ScriptDirectory) -> list[str]:
    """The heads of ghostsync's branch (one, unless a host follow-up and a newer
    ghostsync revision both revise the same revision and are not merged yet)."""
    members = branch_revisions(script)
    return sorted(rev for rev, s in members.items() if not any(n in members for n in s.nextrev))


def head(script: ScriptDirectory) -> str:
    found = heads(script)
    if len(found) != 1:
        raise ChainError(
            f"ghostsync's branch has {len(found)} heads ({', '.join(found)}): merge them "
            "(alembic merge -m 'merge ghostsync' " + " ".join(found) + ")"
        )
    return found[0]


@dataclass
class Declared:
    """What the chain from base to ``revision`` leaves in place."""

    revision: str | None
    columns: dict[str, Column] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    triggers: dict[str, Trigger] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    # signature or trigger name -> the revision whose declaration installed it
    declared_by: dict[str, str] = field(default_factory=dict)

    @property
    def synced_columns(self) -> list[Column]:
        return [c for c in self.columns.values() if c.synced]

    def body(self, signature: str) -> str:
        return function_body(self.functions[signature].create)


def path_to(script: ScriptDirectory, revision: str) -> list[Script]:
    """The revisions from ghostsync's base up to ``revision``, oldest first (merges included)."""
    members = branch_revisions(script)
    if revision not in members:
        raise ChainError(f"revision {revision} is not on ghostsync's branch")
    wanted = _ancestors(script, revision) | {revision}
    ordered = [rev for rev in reversed(list(script.walk_revisions())) if rev.revision in wanted
               and rev.revision in members]
    return ordered


def declaration(rev: Script) -> Declares:
    declared = getattr(rev.module, "DECLARES", None)
    if declared is None:
        return Declares()
    if not isinstance(declared, Declares):
        raise ChainError(f"revision {rev.revision}: DECLARES is not a kit.Declares")
    return declared


def declared_at(revision: str | None, script: ScriptDirectory | None = None) -> Declared:
    """What ghostsync's branch, from its base up to ``revision``, declares (None: nothing)."""
    result = Declared(revision=revision)
    if revision is None:
        return result
    script = script or script_directory()
    for rev in path_to(script, revision):
        declared = declaration(rev)
        for column in declared.columns:
            result.columns[column.name] = column
        for function in declared.functions:
            result.functions[function.signature] = function
            result.declared_by[function.signature] = rev.revision
        for trigger in declared.triggers:
            result.triggers[trigger.name] = trigger
            result.declared_by[trigger.name] = rev.revision
        for removed in declared.removes:
            result.functions.pop(removed, None)
            result.triggers.pop(removed, None)
        for job in declared.jobs:
            if job not in result.jobs:
                result.jobs.append(job)
    return result


__all__ = [
    "BASE_REVISION",
    "CONFIG_ENV",
    "DEFAULT_INI",
    "ChainError",
    "Declared",
    "alembic_config",
    "branch_revisions",
    "config_path",
    "declared_at",
    "down_revisions",
    "function_body",
    "head",
    "heads",
    "script_directory",
    "standing",
]
