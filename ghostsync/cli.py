"""The ``ghostsync`` command: only wiring from arguments to the modules that do the work.

Every failure becomes one line on standard error (``errors.describe``) and a
non-zero exit; a bug says it is one. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ghostsync import __version__, chain, names
from ghostsync.errors import GhostsyncError, describe
from ghostsync.migrations import settings

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

EXIT_CODES = """exit codes:
  0  done / healthy (warnings allowed)
  1  unhealthy (each reason listed) / the job left work undone / its output cut short
     by a reader that closed it (`migrate upgrade head --sql | head`; status keeps
     its verdict)
  2  could not run or check: bad input, unreachable server, no auth schema,
     ghostsync not installed (the line still counts the ghosts), missing
     privilege, unknown revision (one line on standard error)"""

DESCRIPTION = """Ends Supabase ghost users: auth.users rows without a public.users profile.

examples:
  ghostsync migrate upgrade head                       install, or bring up to date
  ghostsync migrate -x lock_timeout=1s upgrade head    Alembic's -x goes before its command
  ghostsync migrate upgrade head --sql                 the SQL, for psql or the SQL editor
  ghostsync migrate downgrade ghostsync@base           take ghostsync out; every profile stays
  ghostsync status --json                              the health check; exit 1 when unhealthy"""


def _positive_int(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after the command's name."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--database-url", default=default, metavar="URL",
                        help="PostgreSQL URL, postgresql:// or postgres:// (default: $DATABASE_URL)")
    parser.add_argument("--alembic-config", default=default, metavar="PATH",
                        help=f"a host project's alembic.ini (default: ${chain.CONFIG_ENV}, else ghostsync's own)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghostsync", description=DESCRIPTION,
        epilog=EXIT_CODES + "\n\nenvironment:\n  DATABASE_URL  the database (or --database-url)\n"
        + f"  {chain.CONFIG_ENV}  a host project's alembic.ini (or --alembic-config)\n"
        + settings.environment_help()
        + f"\n\ndurations: {settings.DURATION_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ghostsync {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name != "migrate":
            _global_options(p, suppress=True)
        return p

    p = command("migrate", "run Alembic's command line on the packaged chain: everything after `migrate` goes "
                           "to Alembic unchanged (ghostsync's own options go before `migrate`)")
    p.add_argument("alembic_args", nargs=argparse.REMAINDER, metavar="ALEMBIC-ARGS")

    p = command("status", "ghosts, orphans, failed syncs, stale profiles, triggers and functions against the "
                          "revision the database is at")
    p.add_argument("--json", action="store_true", help="print one JSON object (schema_version 2)")
    p.add_argument("--prometheus", type=Path, metavar="FILE.prom",
                   help="also write the figures for node_exporter's textfile collector (atomically, in every case); "
                        "needs the prometheus extra: pip install 'ghostsync[prometheus]'")
    p.add_argument("--quick", action="store_true",
                   help="the every-minute check: catalogs, failure ledger and statistics only; its cost does not "
                        "grow with the number of users (ghosts, orphans and stale profiles are not counted)")

    p = command("backfill", "create every missing profile in batches (auth.users in physical order, then a sweep), "
                "each its own transaction; resumable")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="auth users per batch (default: $GHOSTSYNC_BATCH_SIZE, else 5000)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
    p.add_argument("--no-resume", action="store_true", help="walk all of auth.users even after an interrupted run")
    p.add_argument("--dead-after", metavar="DURATION", default=None,
                   help="take a 'running' run with no progress for DURATION for dead (default: "
                        "$GHOSTSYNC_DEAD_AFTER, else 60s)")

    p = command("repair", "retry failed syncs, rewrite stale profiles, delete orphans, backfill ghosts; a row that "
                          "cannot be written (an app constraint refuses it, or another transaction holds it longer "
                          "than $GHOSTSYNC_LOCK_TIMEOUT) is named with its reason and the others are still repaired")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="rows per batch (default: $GHOSTSYNC_BATCH_SIZE, else 5000)")
    p.add_argument("--dry-run", action="store_true", help="count what each step would do; write nothing")

    p = command("export-supabase", "write the chain as Supabase CLI migration files into DIR (the team's "
                                   "supabase/migrations)")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--rollback-to", metavar="REV", default=None,
                   help="write one migration that takes ghostsync back to revision REV instead")
    p.add_argument("--backfill-limit", type=_positive_int, default=None, metavar="N",
                   help="rows the backfill migration repairs in the CLI's one transaction before it leaves the "
                        "rest to `ghostsync backfill` (default 100000)")

    p = command("verify-sql", "print the read-only verification script (one result row, the keys of "
                              "`status --json`)")

    p = command("revision", "write the skeleton of a follow-up revision (and its test)")
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--version-path", type=Path, default=None,
                   help="the folder to write it into (default: the configuration's first version location that "
                        "is not inside an installed package)")
    p.add_argument("--data-job", metavar="JOB", default=None,
                   help="write a data revision instead: a batched job JOB that rewrites every profile disagreeing "
                        "with its account, in a revision of its own (e.g. backfill_display_name)")
    return parser


# -- commands ---------------------------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace) -> int:
    """Alembic's own command line on the packaged chain: ``ghostsync migrate ARGS`` is ``alembic ARGS``."""
    from alembic.config import CommandLine, Config

    from ghostsync import preflight

    cli = CommandLine(prog="ghostsync migrate")
    options = cli.parser.parse_args(args.alembic_args)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    # every env.py, a host's too: a bad -x setting is one line before Alembic prints or runs anything
    settings.check_x_arguments(_x_arguments(options))
    config = Config(file_=str(chain.config_path(args.alembic_config)), ini_section=options.name, cmd_opts=options)
    given = f" --alembic-config {shlex.quote(str(args.alembic_config))}" if args.alembic_config else ""
    command_line = f"ghostsync{given} migrate"  # how the user runs it, for advice
    # Alembic's own handler logs the message, prints it again as FAILED: and exits 255; raised, it is the
    # command line's one line and exit 2 (Alembic's --raiseerr keeps asking for the traceback).
    args.debug = args.debug or bool(options.raiseerr)
    options.raiseerr = True
    with preflight.passing_url(config, args.database_url), _connection_for(config, options, args) as connection:
        if connection is not None:
            # the packaged env.py runs on it: one connection, opened here from the one resolver, and not inside
            # a transaction, so transaction_per_migration still commits each revision on its own
            config.attributes["connection"] = connection
        preflight.check(config, options, args.database_url, command_line)
        if connection is not None and connection.in_transaction():
            connection.rollback()  # what the preflight read; the revisions begin their own transactions
        cli.run_cmd(config, options)
    return 0


def _x_arguments(options: argparse.Namespace) -> dict[str, str]:
    """Alembic's ``-x name=value`` arguments, as ``context.get_x_argument(as_dictionary=True)`` reads them."""
    return dict(item.split("=", 1) for item in options.x or () if "=" in item)


@contextmanager
def _connection_for(config: Config, options: argparse.Namespace,
                    args: argparse.Namespace) -> Iterator[Connection | None]:
    """An open connection (outside any transaction) for a command of the packaged configuration that connects;
    None for a host's configuration (its env.py connects as it chooses) and for --sql."""
    from ghostsync import database, preflight, urls

    name = options.cmd[0].__name__
    if (getattr(options, "sql", False) or name not in preflight.CONNECTING
            or chain.config_path(args.alembic_config).resolve() != chain.DEFAULT_INI):
        yield None
        return
    args.url = urls.resolve(args.database_url, x_argument=_x_arguments(options).get("database_url"),
                            ini_value=config.get_main_option("sqlalchemy.url"))
    with database.opened(args.url, application_name=names.APPLICATION["migrate"]) as engine, \
            engine.connect() as connection:
        yield connection


def cmd_status(args: argparse.Namespace) -> int:
    from ghostsync import findings, health, report, roads, status
    from ghostsync.database import opened, resolve_url

    check = "quick" if args.quick else "full"
    began = time.monotonic()
    before: health.BeforeInstall | None = None  # the ghosts a database without ghostsync already has
    try:
        if args.prometheus is not None:
            report.check_textfile_name(args.prometheus)
        args.url = resolve_url(args.database_url)
        script = chain.script_directory(args.alembic_config)
        with opened(args.url, application_name=names.APPLICATION["status"]) as engine, engine.connect() as conn:
            try:
                found = status.collect(conn, quick=args.quick, script=script,
                                       road=roads.for_config(args.alembic_config))
            except status.StatusError as exc:
                if exc.code == findings.NOT_INSTALLED.code and not args.quick:  # the quick check never counts rows
                    before = health.before_install(conn)
                raise
    except Exception as exc:
        code = exc.code if isinstance(exc, status.StatusError) else _failure_code(exc)
        message = describe(exc, args.url)
        if before is not None:
            message = f"{message}; {before.sentence()}"
        if args.prometheus is not None and args.prometheus.name.endswith(".prom"):
            report.write_prometheus(args.prometheus, None, check=check, duration_s=time.monotonic() - began,
                                    error_code=code)
        if args.json:
            import json

            failure = status.failure_dict(code, message, check)
            if before is not None:
                failure.update(ghosts=before.ghosts, auth_users=before.auth_users)
            _print_verdict(json.dumps(failure, indent=2, sort_keys=True))
        raise GhostsyncError(message) from exc  # chained: --debug shows where it began
    if args.prometheus is not None:
        report.write_prometheus(args.prometheus, found, check=check, duration_s=time.monotonic() - began)
    _print_verdict(report.to_json(found) if args.json else report.render_text(found))
    return 0 if found.healthy else 1


def _print_verdict(text: str) -> None:
    """Print ``text``; a reader that closed standard output (``status | head``) took what it wanted, so the
    command ends quietly with its verdict's exit code rather than a BrokenPipeError."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


def _stdout_gone() -> None:
    """Standard output's reader went away: Python flushes it again at exit, so point it at /dev/null to keep
    that flush quiet too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _failure_code(exc: BaseException) -> str:
    from sqlalchemy.exc import DBAPIError

    from ghostsync.migrations.dberrors import sqlstate

    if isinstance(exc, DBAPIError):
        code = sqlstate(exc)
        if code is None:
            return "unreachable"
        if code == "42501":
            return "missing_privilege"
        if code.startswith("40") or code.startswith("57"):
            return "cancelled"
        return f"sqlstate_{code}"
    if isinstance(exc, chain.ChainError):
        return "chain"
    return "bad_input"


def _declared(conn: object, args: argparse.Namespace) -> chain.Declared:
    from ghostsync import roads, status

    script = chain.script_directory(args.alembic_config)
    revision = status.recorded_revision(conn, script)  # type: ignore[arg-type]
    if revision is None:
        from ghostsync import health

        before = health.before_install(conn)  # type: ignore[arg-type]
        raise GhostsyncError("ghostsync is not installed here (no revision of its branch in alembic_version): "
                             + roads.for_config(args.alembic_config).install
                             + (f"; {before.sentence()}" if before else ""))
    from ghostsync import profile_shape

    return profile_shape.fit(conn, chain.declared_at(revision, script))  # type: ignore[arg-type]


def cmd_backfill(args: argparse.Namespace) -> int:
    from ghostsync import backfill
    from ghostsync.database import opened, refuse_standby, resolve_url
    from ghostsync.progress import Progress

    batch_size = settings.resolve_count("batch_size", given=str(args.batch_size) if args.batch_size else None)
    dead_after = settings.resolve_duration("dead_after", given=args.dead_after).total_seconds()
    interval = settings.resolve_duration("progress_interval").total_seconds()
    args.url = url = resolve_url(args.database_url)
    with opened(url, autocommit=True, application_name=names.APPLICATION["backfill"]) as engine, \
            engine.connect() as conn:
        refuse_standby(conn)
        statements = backfill.statements_for(_declared(conn, args))
        after = None if args.no_resume else backfill.resume_point(conn, statements, dead_after_s=dead_after)
        if args.dry_run:
            found = backfill.plan(conn, batch_size, after)
            run_id = backfill.log_dry_run(conn, found)
            print(f"dry run: would repair {found.ghosts} ghost user(s), walking ~{found.auth_users} auth "
                  f"user(s) in ~{found.batches} batch(es) of {batch_size}"
                  + (f", resuming after {after}" if after else "") + f"; nothing written (audit row {run_id})")
            return 0
        if after:
            print(f"resuming after {after}, where the last run stopped (a final sweep covers what lies behind)",
                  file=sys.stderr)
        bar = Progress("backfill", backfill.estimated_auth_users(conn), interval_s=interval)
        try:
            result = backfill.run_batched(
                conn, statements, batch_size=batch_size, mode="cli", start_after=after, dead_after_s=dead_after,
                on_batch=lambda r: bar.update(r.scanned, r.repaired),
            )
        finally:
            bar.close()
    print(f"backfill {result.status}: repaired {result.repaired} ghost user(s), walked {result.scanned} auth "
          f"user(s) in {result.batches} batch(es), longest batch {result.longest_batch_s * 1000:.0f} ms "
          f"(audit row {result.run_id})")
    if result.unrepairable:
        print(f"{result.unrepairable} ghost(s) could not be repaired (recorded in ghostsync.sync_failures, "
              "see `ghostsync status`): fix the cause, then run `ghostsync repair`", file=sys.stderr)
        return 1
    if result.status != "succeeded":
        print(f"backfill not complete: {result.reason}", file=sys.stderr)
        return 1
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from ghostsync import repair
    from ghostsync.database import opened, refuse_standby, resolve_url

    batch_size = settings.resolve_count("batch_size", given=str(args.batch_size) if args.batch_size else None)
    lock_timeout = settings.resolve_duration("lock_timeout")
    args.url = url = resolve_url(args.database_url)
    app = names.APPLICATION["repair"]
    with opened(url, application_name=app) as engine, opened(url, autocommit=True, application_name=app) as auto:
        with auto.connect() as conn:
            refuse_standby(conn)
            declared = _declared(conn, args)
            if args.dry_run:
                todo = repair.plan(conn, declared)
        if args.dry_run:
            print(f"dry run: would retry {todo.failed_syncs} failed sync(s), rewrite {todo.stale} stale "
                  f"profile(s), delete {todo.orphans} orphan(s), backfill {todo.ghosts} ghost(s); nothing written")
            return 0
        done = repair.repair(engine, auto, declared, batch_size=batch_size, url=url, lock_timeout=lock_timeout)
    print(f"repair: {done.failed_syncs.done} failed sync(s) repaired, {done.failed_syncs.failed} still failing; "
          f"{done.stale.done} stale profile(s) rewritten; {done.orphans.done} orphan(s) deleted; "
          f"{done.ghosts.done} ghost(s) backfilled")
    for step in (done.failed_syncs, done.stale, done.orphans, done.ghosts):
        for line in step.errors:
            print(f"  still failing ({step.job}): {line}", file=sys.stderr)
        if step.not_done:
            print(f"  not done ({step.job}): {step.not_done}", file=sys.stderr)
    return 0 if done.complete else 1


@contextmanager
def _offline_renders_quietly() -> Iterator[None]:
    """A host's env.py configures logging from its ini, so Alembic would log each offline render at INFO:
    a command that renders SQL prints only what it promises, whichever configuration renders it."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def cmd_export(args: argparse.Namespace) -> int:
    from ghostsync import export

    limit = {"backfill_limit": args.backfill_limit} if args.backfill_limit else {}
    with _offline_renders_quietly():
        written = export.export_supabase(args.directory, config=args.alembic_config, rollback_to=args.rollback_to,
                                         **limit)
    for path in written:
        print(path)
    return 0


def cmd_verify_sql(args: argparse.Namespace) -> int:
    from ghostsync import export, verify

    ini = chain.config_path(args.alembic_config)
    # the version table where the configuration's env.py keeps it (a host's may name another schema)
    with _offline_renders_quietly():
        table = export.version_table_of(ini)
    print(verify.script(config=ini, version_table=table), end="")
    return 0


def cmd_revision(args: argparse.Namespace) -> int:
    from ghostsync import generator

    for path in generator.write_follow_up(args.message, config=args.alembic_config, version_path=args.version_path,
                                          data_job=args.data_job):
        print(path)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "migrate": cmd_migrate, "status": cmd_status, "backfill": cmd_backfill, "repair": cmd_repair,
    "export-supabase": cmd_export, "verify-sql": cmd_verify_sql, "revision": cmd_revision,
}


GLOBAL_WITH_VALUE = ("--database-url", "--alembic-config")


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; everything after ``migrate`` goes to Alembic untouched (argparse would read
    Alembic's own options, such as ``-x``, as ghostsync's)."""
    parser = build_parser()
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "migrate":
            args = parser.parse_args([*argv[:i], "migrate"])
            args.alembic_args = argv[i + 1:]
            return args
        if token in GLOBAL_WITH_VALUE:
            i += 2
        elif token.startswith("-"):
            i += 1
        else:
            break
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        settings.check_environment()
    except settings.SettingError as exc:
        print(f"ghostsync: {exc}", file=sys.stderr)
        return 2
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    args.url = None  # the database URL, once a command has resolved it (for the failure's line)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("ghostsync: interrupted; run the command again to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # any other command whose output a reader cut short (`migrate ... --sql | head`): quietly, and not 0,
        # since what it printed is not whole
        _stdout_gone()
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"ghostsync: {describe(exc, args.url).removeprefix('ghostsync: ')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
