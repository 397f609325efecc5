"""``make bench``: ghostsync's cost, measured side by side on a throwaway PostgreSQL.

Every figure is a ratio of two things measured in the same run, on the same
server, on identical copies of the same data, alternating their order; the
absolute times are printed for context only. Run it with
``.venv/bin/python -m bench [--scale 100k|1m|10m]``; it prints a table and
writes ``bench/results.json``. docs/PERFORMANCE.md describes the method.

- ``cluster``: the throwaway server, the databases and how they are seeded;
- ``clients``: concurrent auth-service clients (signups, sign-ins), bounded
  in count and in time;
- ``scenarios``: the five measurements (backfill, signups, sign-ins,
  status, upgrade);
- ``report``: figures, targets, the table and the JSON file;
- ``attribution``: ``python -m bench.attribution``, where the batched
  backfill's extra time goes (not part of ``make bench``).

``runs/`` keeps the JSON of other real runs that docs/PERFORMANCE.md quotes.
"""
