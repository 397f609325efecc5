"""``make bench``: ghostsync's cost, measured side by side on a throwaway PostgreSQL.

Every figure is a ratio of two things measured in the same run, on the same
server, on identical copies of the same data, round after round in rotated
order, with a 95% interval over the rounds and, next to it, the machine's noise:
the same comparison between two identical arms (the A/A control). A target is
met when the interval lies on its side, missed when it lies on the other,
undecided otherwise. Run ``.venv/bin/python -m bench [--scale 100k|1m|10m]``; it
prints the figures and writes ``bench/results.json``. docs/PERFORMANCE.md
describes the method and the runs.

- ``harness``: the throwaway server and the template databases, built on the
  test harness (``ghostsync.testing``: ThrowawayServer, binaries, supabase);
- ``pool``: auth-service clients (``ghostsync.testing.authservice.AuthService``)
  working in slices, with each slice's server CPU time;
- ``stats``: intervals and verdicts; ``report``: figures, table, results.json;
- ``measurements``: one module per measurement, each ``run(scale, ...) -> dict``.

``runs/`` keeps the results of the runs docs/PERFORMANCE.md quotes (``--record``).
"""
