"""What ``ghostsync migrate`` passes to Alembic, and checks, before Alembic runs a command.

- ``--database-url`` reaches every env.py the way it reads a URL: as
  ``config.attributes["database_url"]`` (ghostsync's packaged env), as the
  ini's ``sqlalchemy.url`` (a stock env.py; ``%`` written ``%%`` for the
  ini's interpolation) and as ``DATABASE_URL`` (the README's host env.py),
  for the command's duration (``passing_url``).
- Before a command that connects (an online downgrade always; any
  connecting command when ``--database-url`` is given) the configuration's
  own env.py runs once with a function in place of Alembic's, as ``alembic
  current`` runs it: nothing is migrated and no version table is created.
  On the connection that env.py opens (``check``):
  - it refuses when that connection does not go to the database of
    ``--database-url`` (an env.py reading its URL elsewhere would migrate
    another database);
  - for a downgrade it plans the removal on the heads of that env.py's own
    version table (``ghostsync.plan``) and refuses one that would take host
    revisions down with ghostsync's, or that must drop ghostsync's triggers
    on auth.users when the role may not.
- ``downgrade FROM:TO --sql`` is planned from FROM, with no database.

Every refusal is one line and comes before Alembic runs anything. Plain
``alembic downgrade`` does not pass through here: it cannot be guarded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, make_url

from ghostsync import chain, plan, urls
from ghostsync.errors import GhostsyncError

# Alembic commands whose env.py run connects (revision only with --autogenerate).
CONNECTING = frozenset({"upgrade", "downgrade", "stamp", "current", "check", "ensure_version"})
URL_VARIABLE = urls.URL_VARIABLE


class Refused(GhostsyncError):
    """The command would do harm or go to the wrong database; nothing was done."""


@contextmanager
def passing_url(config: Config, url: str | None) -> Iterator[None]:
    """Hand ``url`` (``--database-url``) to whichever env.py ``config`` runs, for the block's duration."""
    if not url:
        yield
        return
    config.attributes["database_url"] = urls.normalize(url)  # the packaged env.py's
    for_env = urls.for_host_env(url, config.get_main_option("sqlalchemy.url"))  # keeps the host's driver
    config.set_main_option("sqlalchemy.url", for_env.replace("%", "%%"))
    before = os.environ.get(URL_VARIABLE)
    os.environ[URL_VARIABLE] = for_env
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(URL_VARIABLE, None)
        else:
            os.environ[URL_VARIABLE] = before


def check(config: Config, options: Any, url: str | None, command_line: str) -> None:
    """Refuse (``Refused``) what ``options`` (Alembic's parsed command line) must not run.

    ``url`` is ``--database-url`` (None: the env.py's own choice stands);
    ``command_line`` is how the user runs ``ghostsync migrate``, for advice.
    """
    name = options.cmd[0].__name__
    revision = getattr(options, "revision", None)
    if getattr(options, "sql", False):
        if name == "downgrade" and revision and ":" in revision:
            start, destination = revision.split(":", 1)
            script = chain.script_directory(config)
            _refuse_a_bad_plan(script, (start,), destination, None, command_line)
        return
    connects = name in CONNECTING or (name == "revision" and getattr(options, "autogenerate", False))
    if not (name == "downgrade" or (url and connects)):
        return
    script = chain.script_directory(config)
    expected = urls.normalize(url) if url else None

    def on_connection(heads: tuple[str, ...], connection: Connection | None) -> None:
        if expected is not None and connection is not None:
            _refuse_another_database(expected, connection)
        if name == "downgrade" and revision:
            _refuse_a_bad_plan(script, heads, revision, connection, command_line)

    _run_env_with(config, script, revision if name in ("upgrade", "downgrade", "stamp") else None, on_connection)


OnConnection = Callable[[tuple[str, ...], "Connection | None"], None]


def _run_env_with(config: Config, script: ScriptDirectory, destination: str | None, then: OnConnection) -> None:
    def instead_of_migrating(rev: Any, context: MigrationContext) -> list[Any]:
        then(tuple(context.get_current_heads()), context.connection)
        return []

    # The real run logs the connection's lines; this one would print them a second time.
    quiet = logging.getLogger("alembic.runtime.migration")
    was = quiet.disabled
    quiet.disabled = True
    try:
        with EnvironmentContext(config, script, fn=instead_of_migrating, dont_mutate=True, destination_rev=destination):
            script.run_env()
    except CommandError as exc:
        # the env's own one-line failures (unreachable server, a standby), as the real run would give them
        raise Refused(str(exc).strip().removeprefix("ghostsync: ")) from None
    finally:
        quiet.disabled = was


def _place(url: Any) -> tuple[str, int, str | None, str | None]:
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.host or "localhost", parsed.port or 5432, parsed.database, parsed.username


def _shown(place: tuple[str, int, str | None, str | None]) -> str:
    host, port, database, user = place
    return f"database {database} on {host}:{port} as {user}"


def _refuse_another_database(expected: str, connection: Connection) -> None:
    wanted, actual = _place(expected), _place(connection.engine.url)
    if wanted != actual:
        raise Refused(
            f"--database-url names {_shown(wanted)}, but this configuration's env.py connects to "
            f"{_shown(actual)}: it reads its URL from somewhere else; make its env.py read sqlalchemy.url or "
            f"{URL_VARIABLE}, or run the command without --database-url; nothing was done")


def _refuse_a_bad_plan(script: ScriptDirectory, heads: tuple[str, ...], destination: str,
                       connection: Connection | None, command_line: str) -> None:
    try:
        found = plan.downgrade_plan(script, heads, destination)
    except plan.NoPlan:
        return  # Alembic refuses it too, in its own words
    refusal = plan.host_refusal(script, heads, found, command_line)
    if refusal is None and found.drops_auth_triggers and connection is not None:
        with connection.begin_nested() if connection.in_transaction() else connection.begin():
            row = connection.exec_driver_sql(plan.CAN_DROP_AUTH_TRIGGERS).first()
        refusal = plan.trigger_refusal(tuple(row) if row is not None else None)
    if refusal is not None:
        raise Refused(refusal)


__all__ = ["CONNECTING", "Refused", "check", "passing_url"]
