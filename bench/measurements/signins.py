"""Sign-ins: the server CPU a sign-in costs with ghostsync's head triggers, against no trigger at all.

Three databases, clones of the same seeded users: ``none`` (ghostsync_0001,
no trigger), ``control`` (a second copy of ``none``: the A/A control) and
``head``. Each gets a pool of client processes signing seeded users in through
the test harness's ``AuthService`` (the password grant: audit row, session,
refresh token, the UPDATE of ``last_sign_in_at`` and ``updated_at``), the
same users in the same order everywhere, in slices taken in turn. Before it,
every signed-in row is updated once and vacuumed in each database alike, so
the measured sign-ins run in steady state.

Figure: per round, head's sign-ins per second of server CPU over none's (>= 0.99).
A sign-in changes no synced column, so no ghostsync function runs: what is left
is PostgreSQL checking the update trigger's column list.
"""

from __future__ import annotations

from typing import Any

from bench import harness, pool
from bench.report import Figure, measurement_result
from bench.stats import interval

NAME = "signins"
ARMS = {"none": "none", "control": "none", "head": "head"}


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, slices: int = 20,
        slice_s: float = 1.0, clients: int = 4, **_: Any) -> dict[str, Any]:
    ws = harness.workspace(scale, major)
    slices = max(slices, rounds)
    dbs = {arm: ws.clone(template, f"w_signins_{arm}") for arm, template in ARMS.items()}
    ids = [row[0] for row in ws.cluster.execute(
        dbs["none"], "SELECT id::text FROM auth.users WHERE email IS NOT NULL AND NOT is_sso_user "
                     "ORDER BY md5(id::text) LIMIT 20000")]
    say(f"== {NAME}: {len(ARMS)} databases, {clients} client processes each, {slices} rounds of {slice_s:g} s, "
        f"{len(ids):,} users")
    for db in dbs.values():
        ws.cluster.execute(db, "UPDATE auth.users SET last_sign_in_at = last_sign_in_at WHERE id = ANY(%s::uuid[])",
                           (ids,), user=harness.AUTH_ROLE)
        ws.cluster.execute(db, "VACUUM (ANALYZE) auth.users")
    pools: dict[str, pool.Pool] = {}
    try:
        for arm, db in dbs.items():
            pools[arm] = pool.Pool(ws.cluster.url(db, harness.AUTH_ROLE), pool.sign_in_from(ids), clients=clients)
        found = pool.run_in_turn(pools, rounds=slices, slice_s=slice_s, say=say)
    finally:
        for p in pools.values():
            p.close()
    ws.drop(*dbs.values())
    us = {arm: found.server_us(arm) for arm in ARMS}
    say("   server CPU per sign-in: " + ", ".join(f"{arm} {us[arm]:.0f} us" for arm in ARMS))
    wall = interval(found.throughput_ratios("head", "none"))
    return measurement_result(NAME, [
        Figure("signins.head_vs_none_cpu", NAME, "sign-ins per server CPU second: head / no trigger",
               ratios=found.capacity_ratios("head", "none"), control_ratios=found.capacity_ratios("control", "none"),
               target=(">=", 0.99), target_source="issue",
               context={"head us/sign-in": us["head"], "none us/sign-in": us["none"],
                        "wall ratio": wall.value if wall else None},
               note="per round: sign-ins per second of the pool's server backends' CPU time; A/A: a second copy of "
                    "none"),
    ], samples=found.as_dict(), server_us=us)


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
