"""Build ghostsync's Grafana dashboard with grafana-foundation-sdk (Grafana's own typed builders).

    python monitoring/dashboard.py           # (re)write monitoring/ghostsync-dashboard.json
    python monitoring/dashboard.py --check   # exit 1 if the file differs from what this builds

Import the JSON into Grafana (Dashboards > New > Import) and pick the
Prometheus data source that scrapes the node_exporter reading ghostsync's
textfiles. The panels read the metrics ``ghostsync status --prometheus``
writes (``ghostsync/report.py``); the variable ``check`` picks which check's
file a panel reads: ``quick`` (every minute: catalogs, failure ledger,
statistics) or ``full`` (the one that counts ghosts, auth users and
profiles). Panels that need the full check's figures read ``check="full"``
whatever the variable says.

Needs ``pip install grafana-foundation-sdk`` (a build of the 11.x schema; see
docs/OPERATIONS.md). tests/test_monitoring.py builds it, compares it with the
committed JSON, and evaluates every panel's query on a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

OUTPUT = Path(__file__).resolve().parent / "ghostsync-dashboard.json"
UID = "ghostsync"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Grafana substitutes these; tests/test_monitoring.py substitutes them too before it asks Prometheus.
CHECK = 'check="$check"'
WINDOW = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    kind: str  # "stat" or "timeseries"
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    width: int
    height: int
    red_above: float | None = None  # stat: red from this value up
    red_below: float | None = None  # stat: red below this value


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("stat", "Ghost users",
              "Auth users without a profile (full check). Any ghost is a signup that has no profile: run "
              "`ghostsync repair`. Alert: GhostsyncGhostUsers.",
              (Query('ghostsync_ghosts{check="full"}', "ghosts"),), "none", 6, 5, red_above=1),
    PanelSpec("stat", "Failed profile writes (unrepaired)",
              "Users whose last profile write failed, from ghostsync.sync_failures. The signup itself went "
              "through. Alert: GhostsyncFailedProfileWrites.",
              (Query(f"ghostsync_failed_syncs{{{CHECK}}}", "failed syncs"),), "none", 6, 5, red_above=1),
    PanelSpec("stat", "Registration success rate",
              "Share of signups in the interval whose profile write did not fail: 1 - failed profile writes / "
              "auth.users inserts (both from pg_stat_user_tables on the primary).",
              (Query(f"1 - (increase(ghostsync_failed_profile_writes_total{{{CHECK}}}[{WINDOW}]) / "
                     f"clamp_min(increase(ghostsync_auth_users_inserted_total{{{CHECK}}}[{WINDOW}]), 1))",
                     "success rate"),), "percentunit", 6, 5, red_below=0.999),
    PanelSpec("stat", "Check",
              "1 when the last check ran (0: database unreachable or a privilege missing; see "
              "ghostsync_check_error); seconds since the last check that ran.",
              (Query(f"ghostsync_up{{{CHECK}}}", "up"),
               Query(f"time() - ghostsync_last_success_timestamp_seconds{{{CHECK}}}", "seconds since success")),
              "none", 6, 5, red_below=1),
    PanelSpec("timeseries", "Ghost users over time",
              "Auth users without a profile, and profiles without an auth user (orphans), per full check.",
              (Query('ghostsync_ghosts{check="full"}', "ghosts"),
               Query('ghostsync_orphans{check="full"}', "orphans")), "none", 12, 8),
    PanelSpec("timeseries", "Auth users vs profiles",
              "Rows of auth.users and of public.users (full check). The two lines should lie on each other.",
              (Query('ghostsync_auth_users{check="full"}', "auth users"),
               Query('ghostsync_profiles{check="full"}', "profiles")), "none", 12, 8),
    PanelSpec("timeseries", "Signups and failed profile writes per interval",
              "auth.users inserts and failed profile writes per interval (pg_stat_user_tables counters of the "
              "primary; a statistics reset shows as a restart, not a drop).",
              (Query(f"increase(ghostsync_auth_users_inserted_total{{{CHECK}}}[{WINDOW}])", "signups"),
               Query(f"increase(ghostsync_failed_profile_writes_total{{{CHECK}}}[{WINDOW}])",
                     "failed profile writes")), "none", 12, 8),
    PanelSpec("timeseries", "Trigger execution time",
              "Mean time per call of ghostsync's trigger functions (pg_stat_user_functions). Needs "
              "track_functions = 'pl' (or 'all') on the primary; where it is off the panel stays empty and "
              "'timing tracked' is 0.",
              (Query(f"rate(ghostsync_trigger_seconds_total{{{CHECK}}}[{WINDOW}]) / "
                     f"rate(ghostsync_trigger_calls_total{{{CHECK}}}[{WINDOW}])", "mean per call"),
               Query(f"ghostsync_trigger_timing_tracked{{{CHECK}}}", "timing tracked ({{setting}})")),
              "s", 12, 8),
    PanelSpec("timeseries", "Triggers and functions",
              "1 per ghostsync trigger that exists and fires, and per trigger and function that is as its "
              "revision declares. A 0 is a missing, disabled or edited object (alerts: GhostsyncTrigger*).",
              (Query(f"ghostsync_trigger_enabled{{{CHECK}}}", "enabled {{trigger}}"),
               Query(f"ghostsync_trigger_matches{{{CHECK}}}", "as declared {{trigger}}"),
               Query(f"ghostsync_function_matches{{{CHECK}}}", "as declared {{function}}")), "none", 12, 8),
    PanelSpec("timeseries", "Problems and warnings",
              "What `ghostsync status` reports, by code (problems page; warnings such as behind_head do not).",
              (Query(f"ghostsync_problem{{{CHECK}}}", "problem {{code}}"),
               Query(f"ghostsync_warning{{{CHECK}}}", "warning {{code}}")), "none", 12, 8),
)


def _thresholds(spec: PanelSpec) -> dashboard.ThresholdsConfig:
    if spec.red_below is not None:
        steps = [model.Threshold(value=None, color="red"), model.Threshold(value=spec.red_below, color="green")]
    elif spec.red_above is not None:
        steps = [model.Threshold(value=None, color="green"), model.Threshold(value=spec.red_above, color="red")]
    else:
        steps = [model.Threshold(value=None, color="green")]
    return dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def _panel(number: int, spec: PanelSpec) -> stat.Panel | timeseries.Panel:
    panel = stat.Panel() if spec.kind == "stat" else timeseries.Panel()
    panel = (panel.id(number).title(spec.title).description(spec.description).datasource(DATASOURCE).unit(spec.unit)
             .span(spec.width).height(spec.height).thresholds(_thresholds(spec)))
    for n, query in enumerate(spec.queries):
        panel = panel.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id("ABCDEFGH"[n])
            .datasource(DATASOURCE))
    return panel


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard("ghostsync")
        .uid(UID)
        .description("Ghost users, auth users vs profiles, registration success rate and trigger execution "
                     "time, from the textfiles `ghostsync status --prometheus` writes.")
        .tags(["ghostsync", "supabase", "postgresql"])
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.CustomVariable("check").label("Check").values("quick,full")
            .current(model.VariableOption(selected=True, text="quick", value="quick")))
    )
    for number, spec in enumerate(PANELS, start=1):
        board = board.with_panel(_panel(number, spec))
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is not what monitoring/dashboard.py builds: run python monitoring/dashboard.py",
                  file=sys.stderr)
            return 1
        print(f"{args.output}: up to date ({len(PANELS)} panels)")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(PANELS)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
