"""One module per measurement; ``make bench`` (``python -m bench``) runs every one.

Each module has ``run(scale: str, *, major: int = 17, say=print, **options) -> dict`` and can be
run alone (``python -m bench.measurements.NAME --scale 100k``). Modules of this bench return
``bench.report.measurement_result(...)``: a dict whose ``figures`` are ``Figure.as_dict()``; they
share one throwaway server and its templates per process (``bench.harness.workspace``). A module
may also build its own server and return any dict (``cli_backfill``); the runner records it as it is.
"""
