"""``ghostsync export-supabase DIR``: the revision chain as Supabase CLI migrations.

One file per revision, ``<YYYYMMDDHHMMSS>_ghostsync_<file stem>.sql``, holding
exactly what ``alembic upgrade <prev>:<rev> --sql`` prints for that revision,
alembic_version bookkeeping included (so ``ghostsync status`` and a later
switch to Alembic both work). The explicit BEGIN/COMMIT lines are left out:
``supabase db push`` runs each migration file in a transaction of its own.

The timestamps are stable: each revision's ``Create Date`` plus its position
in the chain in seconds, so exporting again never renames a file that a
project has already pushed.
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config

from ghostsync import chain

_CREATE_DATE = re.compile(r"^Create Date:[ \t]*(\S+)(?:[ \t]+(\S+))?", re.MULTILINE)
_TXN = re.compile(r"^(BEGIN|COMMIT);\n", re.MULTILINE)


def _timestamp(doc: str, position: int) -> str:
    match = _CREATE_DATE.search(doc or "")
    base = datetime(2026, 1, 1)
    if match:
        stamp = match.group(1) + (" " + match.group(2) if match.group(2) else "")
        for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                base = datetime.strptime(stamp, fmt)
                break
            except ValueError:
                continue
    return (base.replace(microsecond=0) + timedelta(seconds=position)).strftime("%Y%m%d%H%M%S")


def export_supabase(directory: Path, config: str | Path | None = None, rollback_to: str | None = None) -> list[Path]:
    """Write one migration file per revision into ``directory``; return their paths in order."""
    directory.mkdir(parents=True, exist_ok=True)
    ini = chain.config_path(config)
    script = chain.script_directory(ini)
    revisions = list(reversed(list(script.walk_revisions())))
    written: list[Path] = []
    previous: str | None = None
    for position, rev in enumerate(revisions, start=1):
        buffer = io.StringIO()
        config = Config(str(ini), output_buffer=buffer)
        config.attributes["configure_logger"] = False
        config.set_main_option("sqlalchemy.url", "postgresql+psycopg2://offline/export")
        target = rev.revision if previous is None else f"{previous}:{rev.revision}"
        command.upgrade(config, target, sql=True)
        body = _TXN.sub("", buffer.getvalue())
        stem = Path(rev.path).stem
        path = directory / f"{_timestamp(rev.module.__doc__ or '', position)}_ghostsync_{stem}.sql"
        path.write_text(f"-- ghostsync revision {rev.revision}: {rev.doc}\n" + body)
        written.append(path)
        previous = rev.revision
    return written
