"""`make lint`: squawk over the offline SQL of every revision, one file per revision.

The files are what `ghostsync export-supabase` writes, minus Alembic's own
bookkeeping (CREATE TABLE / INSERT / UPDATE of alembic_version): that table is
Alembic's, created once in a transaction of its own, and its varchar column is
Alembic's choice, not ghostsync's DDL.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ghostsync.export import export_supabase

BOOKKEEPING = re.compile(
    r"^(CREATE TABLE alembic_version \(.*?\);|INSERT INTO alembic_version .*?;|UPDATE alembic_version .*?;)\n",
    re.DOTALL | re.MULTILINE,
)


def main() -> int:
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    with tempfile.TemporaryDirectory() as tmp:
        files = export_supabase(Path(tmp))
        for path in files:
            path.write_text(BOOKKEEPING.sub("", path.read_text()))
        proc = subprocess.run([squawk, "--config", "squawk.toml", *map(str, files)])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
