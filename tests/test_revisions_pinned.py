"""Revisions are frozen history: what each one does is pinned, so no later package change can alter it.

For every revision of ghostsync's branch the pin holds the SHA-256 of what it
does: its offline upgrade and downgrade SQL (every kit operation renders its
SQL there, with the settings fixed below) and the statements it hands the
kit's job runner online. A change to the kit that changed an old revision's
SQL fails here. A new revision gets its pin with::

    GHOSTSYNC_PIN_NEW_REVISIONS=1 .venv/bin/python -m pytest tests/test_revisions_pinned.py

which adds pins for revisions that have none and never rewrites an existing one.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
from argparse import Namespace
from pathlib import Path

from alembic import command

from ghostsync import chain
from ghostsync.backfill import BackfillStatements

PINS = Path(__file__).parent / "data" / "pinned_revisions.json"
# Fixed settings, so the pin is of what the revision does, not of the deploy's policy.
X_ARGS = ["lock_timeout=400ms", "lock_retries=20", "lock_backoff=100ms", "statement_timeout=60s", "batch_size=5000",
          "dead_after=60s", "progress_interval=10s"]


def offline(target: str, *, down: bool = False) -> str:
    buffer = io.StringIO()
    config = chain.alembic_config()
    config.output_buffer = buffer
    config.cmd_opts = Namespace(x=X_ARGS)
    (command.downgrade if down else command.upgrade)(config, target, sql=True)
    return buffer.getvalue()


def fingerprint(rev) -> str:
    below = rev.down_revision or "base"
    digest = hashlib.sha256()
    digest.update(offline(f"{below}:{rev.revision}" if rev.down_revision else rev.revision).encode())
    digest.update(offline(f"{rev.revision}:{below}", down=True).encode())
    for name in sorted(vars(rev.module)):
        value = getattr(rev.module, name)
        if isinstance(value, BackfillStatements):
            digest.update(repr(value).encode())
    return digest.hexdigest()


def test_every_revision_does_exactly_what_it_did_when_it_was_pinned():
    script = chain.script_directory()
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    found = {rev.revision: fingerprint(rev) for rev in chain.path_to(script, chain.head(script))}
    missing = sorted(set(found) - set(pins))
    if missing and os.environ.get("GHOSTSYNC_PIN_NEW_REVISIONS") == "1":
        pins.update({rev: found[rev] for rev in missing})
        PINS.parent.mkdir(parents=True, exist_ok=True)
        PINS.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
        missing = []
    assert not missing, f"no pin for {missing}: pin a new revision with GHOSTSYNC_PIN_NEW_REVISIONS=1"
    changed = sorted(rev for rev in found if found[rev] != pins[rev])
    assert not changed, (f"{changed} no longer do what they did when released: revisions are frozen; change "
                         "behaviour with a new revision (and never change what the kit emits for an old one)")


def test_revisions_reach_the_package_only_through_the_kit():
    for rev in chain.branch_revisions(chain.script_directory()).values():
        tree = ast.parse(Path(rev.path).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        package = {name for name in imported if name.split(".")[0] == "ghostsync"}
        assert package <= {"ghostsync.migrations"}, f"{rev.revision} imports {package}"
        assert all(name in {"__future__", "ghostsync.migrations"} for name in imported), (rev.revision, imported)
