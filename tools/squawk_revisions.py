"""`make lint`: squawk over the SQL of every revision of ghostsync's branch, one file per revision.

Each file holds the statements ``ghostsync export-supabase`` runs for the revision
(``export.upgrade_statements``: what ``ghostsync migrate upgrade PREV:REV --sql`` prints,
cut as the Supabase CLI cuts it), without Alembic's own bookkeeping (the version table
is Alembic's, and its varchar column is Alembic's choice, not ghostsync's DDL) and
without the guard the export wraps them in: squawk reads plain statements, and a
``DO`` block around them would hide them from it. The kit's timeout prelude (a ``DO`` block
of ``set_config(..., true)`` calls, which squawk cannot read) is shown to squawk as the
``SET LOCAL`` statements it is equivalent to.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ghostsync import chain
from ghostsync.export import upgrade_statements

PRELUDE = re.compile(
    r"DO \$ghostsync_step\$\nBEGIN\n"
    r"  PERFORM pg_catalog\.set_config\('lock_timeout', '(\d+ms)', true\);\n"
    r"  PERFORM pg_catalog\.set_config\('statement_timeout', '(\d+ms)', true\);\n"
    r"END\n\$ghostsync_step\$")


def for_squawk(sql: str) -> str:
    match = PRELUDE.fullmatch(sql)
    if match is None:
        return sql
    return f"SET LOCAL lock_timeout = '{match.group(1)}';\nSET LOCAL statement_timeout = '{match.group(2)}'"


def main() -> int:
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    ini = chain.config_path(None)
    script = chain.script_directory(ini)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for rev in chain.path_to(script, chain.head(script)):
            path = Path(tmp) / f"{Path(rev.path).stem}.sql"
            path.write_text("".join(f"{for_squawk(sql)};\n\n" for sql in upgrade_statements(rev, ini)))
            files.append(path)
        proc = subprocess.run([squawk, "--config", "squawk.toml", *map(str, files)])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
