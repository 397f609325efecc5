"""What the revision chain installs, read from the revision files themselves.

Each revision that installs functions or triggers declares them at module
level: ``FUNCTIONS`` maps a function's signature to its CREATE statement and
``TRIGGERS`` names the triggers on auth.users it creates. Walking the chain
from base to a revision gives what that revision leaves installed; status
compares the database against the head's set (drift).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

DEFAULT_INI = Path(__file__).resolve().parent / "migrations" / "alembic.ini"
_BODY = re.compile(r"AS \$function\$(.*?)\$function\$", re.DOTALL)


@dataclass
class Installed:
    """Functions (signature -> body text) and triggers a revision leaves in place."""

    revision: str | None
    functions: dict[str, str] = field(default_factory=dict)
    triggers: list[str] = field(default_factory=list)
    # signature -> the revision just below the one that installed it: downgrading
    # there and upgrading again reinstalls the function's text.
    reinstall_from: dict[str, str] = field(default_factory=dict)


def script_directory(ini: Path | str = DEFAULT_INI) -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(str(ini)))


def function_body(create_statement: str) -> str:
    """The text between ``AS $function$`` and ``$function$``: what pg_proc.prosrc stores."""
    match = _BODY.search(create_statement)
    if match is None:
        raise ValueError("no $function$ body in statement")
    return match.group(1)


def installed_at(revision: str | None = None, ini: Path | str = DEFAULT_INI) -> Installed:
    """What the chain from base up to ``revision`` (default: head) installs."""
    script = script_directory(ini)
    target = revision or script.get_current_head()
    result = Installed(revision=target)
    if target is None:
        return result
    for rev in reversed(list(script.iterate_revisions(target, "base"))):
        module = rev.module
        for signature, statement in getattr(module, "FUNCTIONS", {}).items():
            result.functions[signature] = function_body(statement)
            result.reinstall_from[signature] = str(rev.down_revision or "base")
        for trigger in getattr(module, "TRIGGERS", ()):
            if trigger not in result.triggers:
                result.triggers.append(trigger)
    return result


def known_revisions(ini: Path | str = DEFAULT_INI) -> set[str]:
    return {rev.revision for rev in script_directory(ini).walk_revisions()}


def head(ini: Path | str = DEFAULT_INI) -> str | None:
    return script_directory(ini).get_current_head()
