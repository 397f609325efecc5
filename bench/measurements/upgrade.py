"""Upgrade: ``ghostsync migrate upgrade head`` against the incident report's fix, each under the same signup stream.

Clones of the app's database (its own ``public.users``, every tenth user a
ghost, no ghostsync). Each round, in alternating order: the report's fix
applied with ``psql -1`` (its function, its trigger, its single statement, one
transaction), and ``ghostsync migrate upgrade head`` as a deploy pipeline runs
it (a process), while the test harness's ``loadgen.SignupLoad`` signs users up
(2 clients). Context figures: the upgrade's time over the fix's, and the
longest signup of the stream while each ran (bench target for ghostsync's:
no signup held up to a second).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.report import Figure, measurement_result

NAME = "upgrade"
GHOSTSYNC = str(Path(sys.executable).with_name("ghostsync"))


def _report_fix() -> str:
    from ghostsync import chain

    minimal = chain.script_directory().get_revision("ghostsync_0002").module
    # the report's names (public.handle_new_user, on_auth_user_created); ghostsync_0002's body, which is the report's
    function = str(minimal.HANDLE_NEW_USER.create).replace("ghostsync.handle_new_user()", "public.handle_new_user()")
    trigger = (minimal.ON_AUTH_USER_CREATED.definition.replace("ghostsync_on_auth_user_created", "on_auth_user_created")
               .replace("ghostsync.handle_new_user()", "public.handle_new_user()") + ";\n")
    return function + trigger + harness.REPORT_BACKFILL + ";\n"


def run(scale: str, *, major: int = 17, say: Any = print, upgrade_rounds: int = 2, **_: Any) -> dict[str, Any]:
    from ghostsync.testing.loadgen import SignupLoad

    ws = harness.workspace(scale, major)
    say(f"== {NAME}: {ws.n:,} users, {ws.n // 10:,} ghosts, {upgrade_rounds} round(s), a signup stream of 2 clients")
    script = _report_fix()
    seconds: dict[str, list[float]] = {"report": [], "ghostsync": []}
    stall: dict[str, list[float]] = {"report": [], "ghostsync": []}
    before: list[float] = []
    for order in harness.orders(["report", "ghostsync"], upgrade_rounds):
        for arm in order:
            db = ws.clone("app", f"w_upgrade_{arm}")
            ws.cluster.checkpoint()
            load = SignupLoad(ws.cluster.url(db, harness.AUTH_ROLE), clients=2, max_signups=10_000_000,
                              deadline_s=6 * 3600, pause_s=0.02).start()
            time.sleep(2.0)
            began = time.monotonic()
            if arm == "ghostsync":
                proc = subprocess.run([GHOSTSYNC, "--database-url", ws.cluster.url(db, harness.MIGRATING_ROLE),
                                       "migrate", "upgrade", "head"], capture_output=True, text=True, timeout=6 * 3600)
            else:
                proc = subprocess.run([*ws.cluster.psql_argv(db), "-1", "-v", "ON_ERROR_STOP=1"], input=script,
                                      capture_output=True, text=True, timeout=6 * 3600)
            ended = time.monotonic()
            time.sleep(0.5)
            report = load.stop()
            if proc.returncode != 0:
                raise RuntimeError(f"upgrade arm {arm} failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
            if report.failed:
                raise RuntimeError(f"signups failed during {arm}: {report.summary()}")
            left = ws.cluster.value(db, harness.REPORT_GHOST_COUNT)
            if left:
                raise RuntimeError(f"upgrade arm {arm} left {left} ghost(s)")
            seconds[arm].append(ended - began)
            stall[arm].append(report.longest_stall_s(began, ended) * 1000)
            before.append(report.longest_stall_s(report.began, began) * 1000)
            say(f"   {arm}: {ended - began:.2f} s, longest signup during it {stall[arm][-1]:.0f} ms "
                f"(before it {before[-1]:.0f} ms), {report.attempted} signups")
            ws.drop(db)
    return measurement_result(NAME, [
        Figure("upgrade.time_vs_report_fix", NAME,
               f"migrate upgrade head / report's fix ({ws.n:,} users, {ws.n // 10:,} ghosts)",
               ratios=[g / r for g, r in zip(seconds["ghostsync"], seconds["report"], strict=True)],
               context={"ghostsync s": max(seconds["ghostsync"]), "report fix s": max(seconds["report"])},
               note="a `ghostsync migrate upgrade head` process (interpreter, nine revisions, the backfill and resync "
                    "jobs in batches) vs psql -1 applying the report's function, trigger and single statement"),
        Figure("upgrade.longest_signup", NAME, "longest signup while ghostsync upgrades", unit="ms", kind="max",
               value=max(stall["ghostsync"]), target=("<=", 1000.0), target_source="bench",
               context={"during the report's fix ms": max(stall["report"]), "before ms": max(before)},
               note="client latency of the stream's signups in flight during the upgrade (lock waits show here)"),
    ], samples={"seconds": seconds, "longest_signup_ms": stall})


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
