"""The road a team deploys ghostsync by, and the commands ghostsync's advice names on it.

Every message that tells a team how to install ghostsync, bring it up to date or put back
what a revision declares takes its command from the team's ``Road``, so each road's
wording lives here and nowhere else (``status``, the verification script):

- ``PACKAGED``: ghostsync's own chain, run with ``ghostsync migrate``.
- ``host(ini)``: a host project whose Alembic chain includes ghostsync's branch (``status``
  run with ``--alembic-config`` / ``GHOSTSYNC_ALEMBIC_CONFIG``). Its chain has several
  heads and revisions ghostsync does not know, so ``ghostsync migrate upgrade head``
  fails there: the advice is the host's own ``alembic -c INI upgrade heads``. A reinstall
  goes through ``ghostsync --alembic-config INI migrate``, whose downgrade preflight
  refuses to take the host's revisions with it.
- ``SUPABASE_CLI``: the ``supabase/migrations`` folder ``supabase db push`` applies (the
  verification script's road): export, then push. A reinstall is a rollback file to the
  revision below and the forward file the next export writes after it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ghostsync import chain


@dataclass(frozen=True)
class Road:
    """The three pieces of advice of one road; ``reinstall`` takes ``{below}`` and ``{revision}``."""

    name: str
    install: str
    newer: str
    reinstall_template: str

    def reinstall(self, below: str, revision: str) -> str:
        """The commands that put back what ``revision`` declares, from the revision ``below`` it."""
        return self.reinstall_template.format(below=below, revision=revision)


PACKAGED = Road(
    name="packaged",
    install="run `ghostsync migrate upgrade head`",
    newer="`ghostsync migrate upgrade head` installs what is newer",
    reinstall_template="`ghostsync migrate downgrade {below} && ghostsync migrate upgrade {revision}` reinstalls it",
)

SUPABASE_CLI = Road(
    name="supabase_cli",
    install="run `ghostsync export-supabase supabase/migrations`, then `supabase db push`",
    newer="`ghostsync export-supabase supabase/migrations`, then `supabase db push`, installs what is newer",
    reinstall_template="`ghostsync export-supabase supabase/migrations --rollback-to {below}`, then "
                       "`ghostsync export-supabase supabase/migrations` and `supabase db push` reinstall it",
)


def host(ini: str | Path) -> Road:
    """The road of a host project whose Alembic configuration is ``ini`` (as the team named it)."""
    named = shlex.quote(str(ini))
    escaped = named.replace("{", "{{").replace("}", "}}")  # the template is formatted
    return Road(
        name="host",
        install=f"run `alembic -c {named} upgrade heads`",
        newer=f"`alembic -c {named} upgrade heads` installs what is newer",
        reinstall_template=f"`ghostsync --alembic-config {escaped} migrate downgrade ghostsync@{{below}} && "
                           f"ghostsync --alembic-config {escaped} migrate upgrade ghostsync@{{revision}}` "
                           "reinstalls it",
    )


def for_config(given: str | Path | None = None) -> Road:
    """The road of the Alembic configuration ``given`` (else ``GHOSTSYNC_ALEMBIC_CONFIG``): the packaged
    configuration's, or a host project's."""
    path = chain.config_path(given)
    if path.resolve() == chain.DEFAULT_INI.resolve():
        return PACKAGED
    return host(path)


__all__ = ["PACKAGED", "SUPABASE_CLI", "Road", "for_config", "host"]
