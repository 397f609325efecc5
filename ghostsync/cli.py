"""The ``ghostsync`` command: status, backfill, repair, export-supabase.

This module only wires arguments to the modules that do the work
(``status``, ``backfill``, ``repair``, ``export``) and turns failures into one
line on standard error (``errors.describe``).

Exit codes: 0 done / healthy; 1 unhealthy (status) or the job left work
undone; 2 could not run or check (bad URL, unreachable server, missing
schema, missing privilege, unknown revision).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from ghostsync import backfill, export, health, repair, status
from ghostsync.database import engine_for, resolve_url
from ghostsync.errors import GhostsyncError, describe
from ghostsync.progress import Progress

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: str) -> timedelta:
    match = _DURATION.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"bad duration {value!r}: use e.g. 90s, 15m, 2h or 1d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghostsync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("status", help="ghosts, orphans, failed syncs, stale profiles, triggers, drift")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--prometheus", type=Path, metavar="FILE",
                   help="also write the figures for node_exporter's textfile collector")
    p.add_argument("--since", type=parse_duration, metavar="DURATION",
                   help="check only signups of the last DURATION (90s, 15m, 2h, 1d)")

    p = sub.add_parser("backfill", help="repair every ghost in keyset batches (resumable)")
    p.add_argument("--batch-size", type=positive_int, default=5000)
    p.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
    p.add_argument("--no-resume", action="store_true", help="walk all of auth.users even after an interrupted run")
    p.add_argument("--dead-after", type=parse_duration, metavar="DURATION",
                   default=parse_duration(os.environ.get("GHOSTSYNC_BACKFILL_DEAD_AFTER", "60s")),
                   help="take a 'running' run with no progress for DURATION for dead (default 60s; "
                        "what tells a killed run through a transaction-mode pooler)")

    p = sub.add_parser("repair", help="retry failed syncs, fix stale profiles, backfill ghosts")
    p.add_argument("--batch-size", type=positive_int, default=5000)

    p = sub.add_parser("migrate", help="run Alembic's command line on the packaged chain (ghostsync migrate upgrade head)")
    p.add_argument("alembic_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("export-supabase", help="write the chain as Supabase CLI migrations")
    p.add_argument("directory", type=Path)
    return parser


def cmd_status(args: argparse.Namespace) -> int:
    engine = engine_for(resolve_url(args.database_url), application_name="ghostsync-status")
    try:
        with engine.connect() as conn:
            found = status.collect(conn, since=args.since)
    except status.StatusError as exc:
        raise GhostsyncError(str(exc)) from None
    finally:
        engine.dispose()
    if args.prometheus:
        status.write_prometheus(found, args.prometheus)
    print(status.to_json(found) if args.json else status.render_text(found))
    return 0 if found.healthy else 1


def _signup_trigger_ready(conn: Any) -> bool:
    return all(state.exists and state.enabled for state in health.trigger_states(conn, ("on_auth_user_created",)))


def cmd_backfill(args: argparse.Namespace) -> int:
    engine = engine_for(resolve_url(args.database_url), autocommit=True, application_name="ghostsync-backfill")
    statements = backfill.current_statements()
    try:
        with engine.connect() as conn:
            trigger_ready = _signup_trigger_ready(conn)
            after = None
            if not args.no_resume and trigger_ready:
                after = backfill.resume_point(conn, statements, dead_after_s=args.dead_after.total_seconds())
            if not trigger_ready:
                print("note: the signup trigger is not installed; new signups will be ghosts until "
                      "`alembic upgrade head`", file=sys.stderr)
            if args.dry_run:
                found = backfill.plan(conn, args.batch_size, after)
                run_id = backfill.log_dry_run(conn, found)
                print(f"dry run: would repair {found.ghosts} ghost user(s), walking ~{found.auth_users} auth "
                      f"user(s) in ~{found.batches} batch(es) of {args.batch_size}"
                      + (f", resuming after {after}" if after else "")
                      + f"; nothing written (audit row {run_id})")
                return 0
            if after:
                print(f"resuming after {after}, where the last run stopped", file=sys.stderr)
            bar = Progress("backfill", backfill.estimated_auth_users(conn))
            try:
                result = backfill.run_batched(
                    conn, statements, batch_size=args.batch_size, mode="cli", start_after=after,
                    dead_after_s=args.dead_after.total_seconds(),
                    on_batch=lambda r: bar.update(r.scanned, f", {r.repaired:,} repaired"),
                )
            finally:
                bar.close()
    finally:
        engine.dispose()
    print(f"backfill {result.status}: repaired {result.repaired} ghost user(s), walked {result.scanned} auth "
          f"user(s) in {result.batches} batch(es), longest batch {result.longest_batch_s * 1000:.0f} ms "
          f"(audit row {result.run_id})")
    if result.unrepairable:
        print(f"{result.unrepairable} ghost(s) could not be repaired (recorded in ghostsync.sync_failures, "
              "see `ghostsync status`): fix the cause, then run `ghostsync repair`", file=sys.stderr)
        return 1
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    """Retry failed syncs, then fix stale profiles, then backfill ghosts; each step reported on its own."""
    url = resolve_url(args.database_url)
    undone: list[str] = []
    engine = engine_for(url, application_name="ghostsync-repair")
    try:
        with engine.connect() as conn:
            retried = repair.repair_failed_syncs(conn)
            try:
                stale: int | str = repair.fix_stale_profiles(conn)
            except DBAPIError as exc:
                stale = "not fixed"
                undone.append(f"stale profiles: {describe(exc, url)}")
    finally:
        engine.dispose()
    auto = engine_for(url, autocommit=True, application_name="ghostsync-repair")
    try:
        with auto.connect() as conn:
            try:
                filled = backfill.run_batched(conn, backfill.current_statements(), batch_size=args.batch_size,
                                              mode="repair")
                backfilled: int | str = filled.repaired
                if filled.unrepairable:
                    undone.append(f"backfill: {filled.unrepairable} ghost(s) could not be repaired "
                                  "(recorded in ghostsync.sync_failures)")
            except DBAPIError as exc:
                backfilled = "no"
                undone.append(f"backfill: {describe(exc, url)}")
    finally:
        auto.dispose()
    print(f"repair: {retried.repaired} failed sync(s) repaired, {retried.still_failing} still failing; "
          f"{stale} stale profile(s) fixed; {backfilled} ghost(s) backfilled")
    for line in retried.errors[:10]:
        print(f"  still failing: {line}", file=sys.stderr)
    for line in undone:
        print(f"  not done: {line}", file=sys.stderr)
    return 0 if retried.still_failing == 0 and not undone else 1


def cmd_export(args: argparse.Namespace) -> int:
    for path in export.export_supabase(args.directory):
        print(path)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Alembic's own command line on the packaged chain: ``ghostsync migrate ARGS`` is ``alembic ARGS``."""
    from alembic.config import CommandLine, Config

    from ghostsync.chain import DEFAULT_INI

    cli = CommandLine(prog="ghostsync migrate")
    options = cli.parser.parse_args(args.alembic_args)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(Config(file_=str(DEFAULT_INI), ini_section=options.name, cmd_opts=options), options)
    return 0


COMMANDS = {"migrate": cmd_migrate, "status": cmd_status, "backfill": cmd_backfill, "repair": cmd_repair,
            "export-supabase": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; run the command again to continue", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        try:
            url = resolve_url(args.database_url)
        except Exception:
            url = None
        print(f"ghostsync: {describe(exc, url)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
