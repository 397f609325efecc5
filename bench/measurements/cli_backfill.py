"""The backfill migration applied as the Supabase CLI applies it, under auth load (issue 13).

``python -m bench.measurements.cli_backfill --scale 100k`` (or ``1m``): N ghosts (auth users
without a profile) on a throwaway Supabase-like PostgreSQL at ghostsync_0002 (the trigger is
in place), then the backfill revision ghostsync_0003 applied, on byte-identical clones, in
these ways, each under the same load of signups, sign-ins and hard deletes (the deletes and
sign-ins are of ghosts, the accounts the backfill repairs):

- ``none``: no backfill, the load alone for as long as the one-transaction backfill took;
- ``cli_whole``: the exported file with its limit at N, so the whole backfill runs in the
  CLI's one transaction (``ghostsync.testing.supabase_cli``: RESET ALL, one pipeline);
- ``cli_default``: the exported file as ``export-supabase`` writes it (its default limit;
  at 100k the same as ``cli_whole``, so not run there);
- ``alembic``: ``ghostsync migrate upgrade ghostsync_0003`` online: batches of 5000, each its
  own short transaction (what ``ghostsync backfill`` does too).

A one-transaction backfill holds a KEY SHARE lock on every account it repaired until it
commits, so a hard delete of one of them waits for the rest of the file; signups and
sign-ins (no key change) do not wait. The figures are ratios of things measured in the same
run: each arm's time over the batched run's, each arm's longest hard delete over the
load-alone arm's, and the absolute times for context.

``run(scale) -> dict`` is what ``make bench`` calls; the module prints a table when run alone.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from bench.harness import scale_users
from ghostsync.export import DEFAULT_BACKFILL_LIMIT, export_supabase
from ghostsync.testing import binaries, supabase_cli
from ghostsync.testing.authservice import AUTH_ROLE, AuthService
from ghostsync.testing.loadgen import SignupLoad
from ghostsync.testing.server import SUPERUSER, ThrowawayServer
from ghostsync.testing.supabase import (
    grant_database_privileges,
    make_cluster_supabase_like,
    make_database_supabase_like,
)

MIGRATING_ROLE = "postgres"
SEED_CHUNK = 250_000
SAMPLE = 4000  # ghosts the sign-in and delete clients pick from (disjoint halves)

# N auth users as the auth service leaves them: email (most), phone, anonymous and SSO accounts.
SEED = """
INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  confirmation_token, recovery_token, email_change_token_new, email_change, raw_app_meta_data,
  raw_user_meta_data, created_at, updated_at, phone, is_sso_user, is_anonymous)
SELECT '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated',
       CASE WHEN g %% 20 IN (0, 1) THEN NULL ELSE 'user' || g || '@example.com' END,
       '$2a$10$' || md5(g::text), CASE WHEN g %% 5 <> 0 THEN now() - interval '1 day' END, '', '', '', '',
       jsonb_build_object('provider', 'email'), '{}'::jsonb,
       now() - interval '2 days', now() - interval '1 day',
       CASE WHEN g %% 20 = 0 THEN '1555' || lpad(g::text, 9, '0') END, g %% 20 = 2, g %% 20 = 1
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


@dataclass
class Timed:
    kind: str
    started: float
    latency_s: float
    error: str | None = None


@dataclass
class Load:
    """Signups (loadgen.SignupLoad), and sign-ins and hard deletes of sampled ghosts (AuthService),
    bounded in time and count."""

    url: str
    sign_in_ids: list[str]
    delete_ids: list[str]
    deadline_s: float = 3600.0
    records: list[Timed] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.signups = SignupLoad(self.url, clients=2, max_signups=1_000_000, deadline_s=self.deadline_s,
                                  pause_s=0.01)

    def _loop(self, kind: str, ids: list[str], pause_s: float) -> None:
        deadline = time.monotonic() + self.deadline_s
        auth = AuthService(self.url)
        try:
            for user_id in ids:
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                began = time.monotonic()
                error = None
                try:
                    if kind == "sign_in":
                        auth.sign_in(uuid.UUID(user_id))
                    else:
                        auth.hard_delete(uuid.UUID(user_id))
                except Exception as exc:  # recorded, as the load generator records its errors
                    error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    if auth.conn.closed:
                        auth = AuthService(self.url)
                with self._lock:
                    self.records.append(Timed(kind, began, time.monotonic() - began, error))
                time.sleep(pause_s)
        finally:
            auth.close()

    def start(self) -> Load:
        self.signups.start()
        for kind, ids, pause in (("sign_in", self.sign_in_ids, 0.01), ("hard_delete", self.delete_ids, 0.05)):
            thread = threading.Thread(target=self._loop, args=(kind, ids, pause), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        report = self.signups.stop()
        for thread in self._threads:
            thread.join(timeout=120)
        self.records += [Timed("signup", r.started, r.latency_s, r.error) for r in report.signups]

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """Per kind: requests in flight during [start, end], failures, p50/p99/max latency (ms)."""
        out: dict[str, Any] = {}
        for kind in ("signup", "sign_in", "hard_delete"):
            chosen = [r for r in self.records if r.kind == kind and r.started <= end
                      and r.started + r.latency_s >= start]
            lat = sorted(r.latency_s for r in chosen)

            def pct(p: float, lat: list[float] = lat) -> float:
                return round(lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1000, 1) if lat else 0.0

            out[kind] = {"requests": len(chosen), "failed": sum(1 for r in chosen if r.error),
                         "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(lat[-1] * 1000, 1) if lat else 0.0,
                         "over_1s": sum(1 for x in lat if x > 1.0),
                         "errors": sorted({r.error for r in chosen if r.error})[:3]}
        return out


class Bench:
    """One throwaway server; a seeded template database; clones of it for each arm."""

    def __init__(self, major: int) -> None:
        found = binaries.find(major)
        if found is None:
            raise SystemExit(f"PostgreSQL {major} is not available on this machine (make servers provides it)")
        self.server = ThrowawayServer(found)

    def __enter__(self) -> Bench:
        self.server.start()
        make_cluster_supabase_like(self.server.url())
        self.execute("postgres", "ALTER SYSTEM SET autovacuum = off")
        self.execute("postgres", "SELECT pg_reload_conf()")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def url(self, db: str, user: str = SUPERUSER) -> str:
        return self.server.url(db, user=user)

    def execute(self, db: str, sql: str, params: Any = None, user: str = SUPERUSER) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.url(db, user))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def value(self, db: str, sql: str) -> Any:
        return self.execute(db, sql)[0][0]

    def clone(self, template: str, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.execute("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        grant_database_privileges(self.url(name))

    def drop(self, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def upgrade(self, db: str, target: str, **x: str) -> None:
        from alembic import command

        from ghostsync.chain import alembic_config

        config = alembic_config()
        config.cmd_opts = argparse.Namespace(x=[f"database_url={self.url(db, MIGRATING_ROLE)}"]
                                             + [f"{k}={v}" for k, v in x.items()])
        command.upgrade(config, target)

    def seed(self, n: int) -> None:
        self.execute("postgres", 'CREATE DATABASE "cb_seed"')
        make_database_supabase_like(self.url("cb_seed"))
        grant_database_privileges(self.url("cb_seed"))
        conn = psycopg2.connect(self.url("cb_seed"))
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET ROLE {AUTH_ROLE}")
                for first in range(1, n + 1, SEED_CHUNK):
                    cur.execute(SEED, {"first": first, "last": min(n, first + SEED_CHUNK - 1)})
                    conn.commit()
        finally:
            conn.close()
        self.upgrade("cb_seed", "ghostsync_0002")  # the trigger is in place; every seeded user is a ghost
        self.execute("cb_seed", "VACUUM (FREEZE, ANALYZE) auth.users")
        self.execute("postgres", "CHECKPOINT")


def _file(folder: Path, limit: int) -> supabase_cli.Migration:
    export_supabase(folder, backfill_limit=limit)
    [path] = folder.glob("*_ghostsync_0003_*.sql")
    return supabase_cli.Migration(path, path.name[:14], path.name[15:-4])


def run(scale: str, *, major: int = 17, say: Any = print) -> dict[str, Any]:
    """Measure the backfill migration at ``scale`` ("100k", "1m" or a number of ghosts)."""
    n = scale_users(scale)
    began = time.perf_counter()
    arms = ["cli_whole", "alembic", "none"] + (["cli_default"] if n > DEFAULT_BACKFILL_LIMIT else [])
    results: dict[str, Any] = {}
    with Bench(major) as bench, tempfile.TemporaryDirectory() as tmp:
        say(f"== CLI-style backfill: {n:,} ghosts, PostgreSQL {major}")
        t = time.perf_counter()
        bench.seed(n)
        say(f"   seeded {n:,} ghosts at ghostsync_0002 in {time.perf_counter() - t:.1f} s")
        sample = [r[0] for r in bench.execute("cb_seed", "SELECT id::text FROM auth.users ORDER BY random() LIMIT %s",
                                              (SAMPLE,))]
        random.Random(13).shuffle(sample)
        files = {"cli_whole": _file(Path(tmp) / "whole" / "migrations", max(n, 1)),
                 "cli_default": _file(Path(tmp) / "default" / "migrations", DEFAULT_BACKFILL_LIMIT)}
        for arm in arms:
            db = f"cb_{arm}"
            bench.clone("cb_seed", db)
            bench.execute("postgres", "CHECKPOINT")
            load = Load(bench.url(db, AUTH_ROLE), sample[: SAMPLE // 2], sample[SAMPLE // 2:])
            load.start()
            time.sleep(1.0)
            start = time.monotonic()
            notices: list[str] = []
            if arm == "none":
                time.sleep(max(1.0, results.get("cli_whole", {}).get("seconds", 5.0)))
            elif arm == "alembic":
                bench.upgrade(db, "ghostsync_0003")
            else:
                outcome = supabase_cli.apply_files(bench.url(db, MIGRATING_ROLE), [files[arm]])
                if not outcome.ok or outcome.warnings:
                    raise RuntimeError(f"{arm}: the file failed or warned:\n{outcome.text}")
                notices = [str(x) for x in outcome.notices]
            end = time.monotonic()
            time.sleep(0.5)
            load.stop()
            audit = bench.execute(db, "SELECT status, records_affected FROM public.cleanup_audit_log "
                                      "WHERE job_name = 'backfill_ghost_users'")
            left = int(bench.value(db, "SELECT count(*) FROM auth.users u WHERE NOT EXISTS "
                                       "(SELECT 1 FROM public.users p WHERE p.id = u.id)"))
            orphans = int(bench.value(db, "SELECT count(*) FROM public.users p WHERE NOT EXISTS "
                                          "(SELECT 1 FROM auth.users u WHERE u.id = p.id)"))
            if orphans:
                raise RuntimeError(f"{arm}: {orphans} orphan profile(s)")
            results[arm] = {"seconds": round(end - start, 2), "audit": audit, "ghosts_left": left,
                            "load": load.figures(start, end), "notices": notices}
            row = results[arm]["load"]
            say(f"   {arm:<12} {end - start:7.2f} s; ghosts left {left:,}; audit {audit}; longest hard delete "
                f"{row['hard_delete']['max_ms']:.0f} ms ({row['hard_delete']['over_1s']} over 1 s of "
                f"{row['hard_delete']['requests']}), signup p99 {row['signup']['p99_ms']:.0f} ms, sign-in p99 "
                f"{row['sign_in']['p99_ms']:.0f} ms")
            bench.drop(db)
    base = results["none"]["load"]
    ratios: dict[str, Any] = {}
    for arm in [a for a in arms if a != "none"]:
        load = results[arm]["load"]
        ratios[arm] = {
            "time_vs_alembic": round(results[arm]["seconds"] / results["alembic"]["seconds"], 2),
            "longest_hard_delete_vs_load_alone": round(load["hard_delete"]["max_ms"]
                                                       / max(base["hard_delete"]["max_ms"], 0.1), 1),
            "signup_p99_vs_load_alone": round(load["signup"]["p99_ms"] / max(base["signup"]["p99_ms"], 0.1), 2),
            "sign_in_p99_vs_load_alone": round(load["sign_in"]["p99_ms"] / max(base["sign_in"]["p99_ms"], 0.1), 2),
        }
    say("   ratios (same run, identical clones):")
    for arm, figures in ratios.items():
        say(f"   {arm:<12} " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return {"measurement": "cli_backfill", "scale": scale, "n": n, "postgresql": major,
            "limit": DEFAULT_BACKFILL_LIMIT, "arms": results, "ratios": ratios,
            "total_seconds": round(time.perf_counter() - began, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measurements.cli_backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="100k", help="ghosts: 100k (default), 1m, or a number")
    parser.add_argument("--pg", type=int, default=17, choices=(15, 17), help="PostgreSQL major (default 17)")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    result = run(args.scale, major=args.pg)
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
