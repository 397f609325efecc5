"""Signups: a signup's server CPU with ghostsync's head trigger set, against the report's minimal trigger.

Four databases, clones of the same seeded users: ``none`` (ghostsync_0001, no
trigger), ``minimal`` (ghostsync_0003: the report's one AFTER INSERT trigger,
``INSERT ... ON CONFLICT DO NOTHING`` without an exception block), ``control``
(a second copy of ``minimal``: the A/A control) and ``head`` (every ghostsync
trigger: the safe signup sync, the update and delete syncs). Each gets a pool of
client processes signing users up through the test harness's ``AuthService``
(the auth service's statements: INSERT users, UPDATE role, INSERT identities,
the metadata UPDATEs, the audit row; three in ten autoconfirmed, whose
confirmation UPDATE in the same transaction fires head's update sync), in
slices taken in turn, round after round.

Figure: per round, head's signups per second of its server backends' CPU time
over minimal's, the slices side by side (>= 1: head costs the server no more per
signup). The wall-clock throughput ratio is context (the clients' own CPU
dilutes it on a machine this size).
"""

from __future__ import annotations

from typing import Any

from bench import harness, pool
from bench.report import Figure, measurement_result

NAME = "signups"
ARMS = {"none": "none", "minimal": "minimal", "control": "minimal", "head": "head"}


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, slices: int = 20,
        slice_s: float = 1.0, clients: int = 4, **_: Any) -> dict[str, Any]:
    ws = harness.workspace(scale, major)
    slices = max(slices, rounds)
    say(f"== {NAME}: {len(ARMS)} databases, {clients} client processes each, {slices} rounds of {slice_s:g} s slices")
    dbs = {arm: ws.clone(template, f"w_signups_{arm}") for arm, template in ARMS.items()}
    pools: dict[str, pool.Pool] = {}
    try:
        for arm, db in dbs.items():
            pools[arm] = pool.Pool(ws.cluster.url(db, harness.AUTH_ROLE), pool.signup, clients=clients)
        found = pool.run_in_turn(pools, rounds=slices, slice_s=slice_s, say=say)
    finally:
        for p in pools.values():
            p.close()
    for arm in ("minimal", "control", "head"):
        left = ws.cluster.value(dbs[arm], harness.REPORT_GHOST_COUNT)
        if left:
            raise RuntimeError(f"signups on {arm} left {left} ghost(s)")
    ws.drop(*dbs.values())
    us = {arm: found.server_us(arm) for arm in ARMS}
    say("   server CPU per signup: " + ", ".join(f"{arm} {us[arm]:.0f} us" for arm in ARMS))
    return measurement_result(NAME, [
        Figure("signups.head_vs_minimal_cpu", NAME, "signups per server CPU second: head / report's minimal trigger",
               ratios=found.capacity_ratios("head", "minimal"),
               control_ratios=found.capacity_ratios("control", "minimal"),
               target=(">=", 1.00), target_source="issue",
               context={"head us/signup": us["head"], "minimal us/signup": us["minimal"],
                        "wall ratio": _gmean(found.throughput_ratios("head", "minimal"))},
               note="per round: signups per second of the pool's server backends' CPU time (/proc schedstat), head's "
                    "slice next to minimal's; A/A control: a second copy of minimal, measured the same way"),
        Figure("signups.minimal_vs_none_cpu", NAME, "signups per server CPU second: minimal trigger / no trigger",
               ratios=found.capacity_ratios("minimal", "none"),
               control_ratios=found.capacity_ratios("control", "minimal"),
               context={"none us/signup": us["none"], "minimal us/signup": us["minimal"]},
               note="what any profile trigger costs a signup; context"),
    ], samples=found.as_dict(), server_us=us)


def _gmean(values: list[float]) -> float | None:
    from bench.stats import interval

    found = interval(values)
    return found.value if found else None


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
