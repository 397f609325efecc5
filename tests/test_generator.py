"""``ghostsync revision``: follow-ups without copy-paste, and the workbench the guide uses.

The workflow of docs/FOLLOW-UP-REVISIONS.md, done as a developer would: the
generator writes a follow-up that adds a synced column ``display_name``
(from ``raw_user_meta_data ->> 'full_name'``) and a second, data revision
that backfills it; the developer fills in the SQL (``fill_in_display_name``:
a handful of edits, no copy-paste). Then, with no other change to the
package and only ``--alembic-config`` pointing at a project whose
``version_locations`` list ``ghostsync:migrations/versions`` and the
follow-up's folder: ``ghostsync repair``, ``backfill``, ``status`` (stale
check, drift of functions and triggers, the job's runs), ``export-supabase``
and ``migrate upgrade head --sql`` all handle it, on PostgreSQL 15 and 17.
The generated revisions pass ``make lint``'s checks and their own tests,
unedited and filled in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ghostsync import chain, generator
from ghostsync.migrations.declarations import Function, Trigger
from ghostsync.testing.fixtures import SupabaseDatabase, SupabaseServer, supabase_database
from tests.hosts import ELSEWHERE, alembic_init_host, run_pytest, untouched
from tests.paths import REPO

SCRIPT = chain.script_directory()
HEAD = chain.head(SCRIPT)
MESSAGE = "Profiles carry display_name, from raw_user_meta_data ->> 'full_name'"
DATA_MESSAGE = "Backfill display_name"
DATA_JOB = "backfill_display_name"

# -- the developer's edits ------------------------------------------------------------------------

# the syncs read the account again at COMMIT, as u
DISPLAY_NAME_VALUE = "pg_catalog.left(u.raw_user_meta_data ->> 'full_name', 100)"
DISPLAY_NAME_COLUMN = '''DISPLAY_NAME = kit.Column(
    "display_name", "pg_catalog.left({row}.raw_user_meta_data ->> 'full_name', 100)", "text",
    nullable=True, max_length=100,
)
COLUMNS: tuple[kit.Column, ...] = (DISPLAY_NAME,)
'''
# What pg_get_triggerdef prints (under search_path '') for the update trigger with
# raw_user_meta_data added to its columns and its WHEN clause, on PostgreSQL 15 and 17.
UPDATED_TRIGGER = (
    "CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_updated AFTER UPDATE ON auth.users "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ((((old.email)::text IS DISTINCT FROM (new.email)::text) "
    "OR ((old.email_confirmed_at IS NULL) IS DISTINCT FROM (new.email_confirmed_at IS NULL)) "
    "OR (old.deleted_at IS DISTINCT FROM new.deleted_at) "
    "OR ((old.raw_user_meta_data ->> 'full_name'::text) IS DISTINCT FROM "
    "(new.raw_user_meta_data ->> 'full_name'::text)))) EXECUTE FUNCTION ghostsync.handle_user_updated()"
)
# what the follow-up leaves as it was: deleted from the skeleton with their PREVIOUS_ twins
UNCHANGED = ("HANDLE_USER_DELETED", "HANDLE_USERS_DELETED", "ON_AUTH_USER_CREATED", "ON_AUTH_USER_DELETED",
             "ON_AUTH_USER_UPDATED", "ZZ_GHOSTSYNC_ON_AUTH_USER_CREATED",
             "ON_AUTH_USERS_DELETED")
DESCRIPTION = """\
Profiles carry display_name: the user's full name as the app's signup form
stores it (raw_user_meta_data ->> 'full_name'), at most 100 characters, kept
in sync on signup and on every change of the metadata. End users write that
metadata themselves: the column is display text, never used for authorization.

- public.users.display_name (text) is added, or an existing column adopted if
  it takes 100 characters and NULL; otherwise the upgrade stops with one line
  before changing anything.
- ghostsync.handle_new_user() and handle_user_updated() write it;
  zz_ghostsync_on_auth_user_updated also fires when the full name changes.
- Existing profiles are filled by the data revision that follows this one."""


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected exactly one {old!r} in the skeleton"
    return text.replace(old, new)


def _block(name: str) -> re.Pattern[str]:
    """A constant of the skeleton (with its '# declared by' line): kit.Function(...) or kit.Trigger(...)."""
    return re.compile(rf'(?:^# declared by \S+\n)?^{name} = kit\.(?:Function\(.*?^"""\)|Trigger\(\n.*?^\))\n',
                      re.DOTALL | re.MULTILINE)


def _edit_block(source: str, name: str, *edits: tuple[str, str]) -> str:
    match = _block(name).search(source)
    assert match, f"no {name} in the skeleton"
    block = match.group(0)
    for old, new in edits:
        block = _replace_once(block, old, new)
    return source[:match.start()] + block + source[match.end():]


def _delete(source: str, name: str) -> str:
    for constant in (name, f"PREVIOUS_{name}"):
        source, n = _block(constant).subn("", source)
        assert n == 1, constant
    source = _replace_once(source, f"        {name},\n", "")
    return re.sub(rf"^ *kit\.(?:install_function|trigger_sql)\(PREVIOUS_{name}, \"\w+\"\),?\n", "", source,
                  count=1, flags=re.MULTILINE)


# write_profile's lists of the synced columns and of their values, where display_name joins them
SYNCED_NAMES = "  synced text[] := ARRAY['id', 'email', 'email_verified', 'deleted_at',\n"
SYNCED_SOURCES = "  sources text[] := ARRAY['u.id', 'u.email', 'u.email_confirmed_at IS NOT NULL', 'u.deleted_at',\n"


def fill_in_display_name(source: str) -> str:
    """The edits a developer makes to the generated skeleton to sync display_name."""
    source = re.sub(r"TODO: say what this revision changes.*?leaves in place\.", DESCRIPTION, source,
                    count=1, flags=re.DOTALL)
    for name in UNCHANGED:
        source = _delete(source, name)
    insert = ("INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)",
              "INSERT INTO public.users (id, email, email_verified, deleted_at, display_name, created_at, updated_at)")
    source = _edit_block(source, "HANDLE_NEW_USER", insert,
                         ("    SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, u.deleted_at,\n",
                          "    SELECT u.id, u.email, u.email_confirmed_at IS NOT NULL, u.deleted_at,\n"
                          f"           {DISPLAY_NAME_VALUE},\n"))
    source = _edit_block(
        source, "HANDLE_USER_UPDATED",
        ("             OR p.deleted_at IS DISTINCT FROM u.deleted_at\n",
         f"             OR p.deleted_at IS DISTINCT FROM u.deleted_at\n"
         f"             OR p.display_name IS DISTINCT FROM {DISPLAY_NAME_VALUE}\n"),
        ("          deleted_at = u.deleted_at,\n",
         f"          deleted_at = u.deleted_at,\n          display_name = {DISPLAY_NAME_VALUE},\n"),
    )
    # the slow path (a profile the app wrote first, a table without some synced column) writes it too
    source = _edit_block(source, "WRITE_PROFILE",
                         (SYNCED_NAMES, SYNCED_NAMES.replace("'deleted_at',", "'deleted_at', 'display_name',")),
                         (SYNCED_SOURCES, SYNCED_SOURCES + "                          '"
                          + DISPLAY_NAME_VALUE.replace("'", "''") + "',\n"))
    match = _block("ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED").search(source)
    assert match
    new_trigger = Trigger("zz_ghostsync_on_auth_user_updated", "auth.users", UPDATED_TRIGGER)
    source = (source[:match.start()] + generator.trigger_literal("ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED", new_trigger)
              + "\n" + source[match.end():])
    return _replace_once(source, "COLUMNS: tuple[kit.Column, ...] = ()\n", DISPLAY_NAME_COLUMN)


# -- projects ----------------------------------------------------------------------------------------

def cli(*args: str, url: str | None = None, cwd: Path | None = None, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``ghostsync`` command line, as a developer or a pipeline runs it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("GHOSTSYNC_ALEMBIC_CONFIG", "DATABASE_URL")}
    if url is not None:
        environment["DATABASE_URL"] = url
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "ghostsync", *args], cwd=cwd or REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints (exit 2, no traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def write_project_ini(root: Path, *extra_locations: str) -> Path:
    """An alembic.ini (the packaged one's environment and logging) whose version_locations list
    ghostsync's chain and the project's own folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "versions").mkdir(exist_ok=True)
    text = chain.DEFAULT_INI.read_text()
    locations = " ".join(("ghostsync:migrations/versions", "%(here)s/versions", *extra_locations))
    text = _replace_once(text, "version_locations = ghostsync:migrations/versions",
                         f"version_locations = {locations}")
    (root / "alembic.ini").write_text(text)
    return root / "alembic.ini"


@dataclass
class Project:
    root: Path
    ini: Path
    follow_up: str
    data: str
    files: list[Path]

    def status(self, db: SupabaseDatabase, *extra: str) -> tuple[int, dict[str, Any]]:
        proc = cli("--alembic-config", str(self.ini), "status", "--json", *extra, url=db.url(), cwd=self.root)
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def migrate(self, db: SupabaseDatabase, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("--alembic-config", str(self.ini), "migrate", *args, url=db.url(), cwd=self.root)

    def run(self, db: SupabaseDatabase, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("--alembic-config", str(self.ini), *args, url=db.url(), cwd=self.root)


def revision_of(path: Path) -> str:
    match = re.search(r"""^revision(?:: str)? = ["']([^"']+)["']$""", path.read_text(), re.MULTILINE)
    assert match, path
    return match.group(1)


def make_display_name_project(root: Path) -> Project:
    """The follow-up and its data revision, written by the generator and filled in."""
    ini = write_project_ini(root)
    proc = cli("--alembic-config", str(ini), "revision", "-m", MESSAGE, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    revision_path, test_path = (Path(line) for line in proc.stdout.split())
    revision_path.write_text(fill_in_display_name(revision_path.read_text()))
    proc = cli("--alembic-config", str(ini), "revision", "--data-job", DATA_JOB, "-m", DATA_MESSAGE, cwd=root)
    if proc.returncode == 2 and "unrecognized arguments: --data-job" in proc.stderr:
        # until the command line passes --data-job on (cli.py): the same call, from Python
        data_files = generator.write_follow_up(DATA_MESSAGE, config=ini, data_job=DATA_JOB)
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        data_files = [Path(line) for line in proc.stdout.split()]
    return Project(root=root, ini=ini, follow_up=revision_of(revision_path), data=revision_of(data_files[0]),
                   files=[revision_path, test_path, *data_files])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return make_display_name_project(tmp_path_factory.mktemp("display_name") / "project")


@pytest.fixture(scope="module")
def skeleton(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """An unedited skeleton, as `ghostsync revision` writes it."""
    root = tmp_path_factory.mktemp("skeleton") / "project"
    ini = write_project_ini(root)
    proc = cli("--alembic-config", str(ini), "revision", "-m", "Nothing changes yet", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = [Path(line) for line in proc.stdout.split()]
    return Project(root=root, ini=ini, follow_up=revision_of(files[0]), data="", files=files)


def load(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- lint: what `make lint` runs, on the generated files ---------------------------------------------

# what lint() runs; `make test` installs them (the test extra holds the lint extra: tests/test_makefile.py)
LINT_TOOLS = ("ruff", "mypy", "squawk")


def tool(name: str) -> str | None:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    return found if Path(found).exists() else None


def lint(paths: list[Path], ini: Path, tmp_path: Path) -> None:
    """ruff (the repository's rules), mypy --strict (what `make lint` holds ghostsync/ to, so a revision of
    ghostsync's own chain) and squawk as `make lint` runs it (tools/squawk_revisions.py), on the chain the
    project's configuration reads. A tool the lint extra did not install is named in the failure, not
    skipped silently."""
    missing = [name for name in LINT_TOOLS if tool(name) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: `make lint` installs them (pip install -e '.[lint]')")
    # the repository's rules, as a host project sees ghostsync: an installed, third-party package
    ruff = subprocess.run([tool("ruff"), "check", "--config", str(REPO / "pyproject.toml"), "--config",
                           "lint.isort.known-third-party = ['alembic', 'ghostsync']", *map(str, paths)],
                          capture_output=True, text=True, cwd=REPO)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    revisions = [p for p in paths if not p.name.startswith("test_")]
    mypy = subprocess.run([tool("mypy"), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "mypy"),
                           "--follow-imports", "silent", *map(str, revisions)],
                          capture_output=True, text=True, cwd=REPO)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    # squawk exactly as `make lint` runs it, on the chain the project's configuration reads
    squawk = subprocess.run([sys.executable, "tools/squawk_revisions.py"], capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, GHOSTSYNC_ALEMBIC_CONFIG=str(ini)))
    assert squawk.returncode == 0, squawk.stdout + squawk.stderr


def run_generated_tests(project: Project, major: int) -> None:
    """The tests the generator wrote, run as the project would run them (pytest, the ghostsync[testing] plugin)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--supabase-pg-versions={major}",
         "--rootdir", str(project.root), str(project.root / "tests")],
        cwd=project.root, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k not in ("GHOSTSYNC_ALEMBIC_CONFIG", "PYTEST_ADDOPTS")},
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert re.search(r"\d+ passed", proc.stdout) and "failed" not in proc.stdout.splitlines()[-1]


# -- the skeleton -----------------------------------------------------------------------------------

def test_the_skeleton_holds_the_heads_texts_and_the_shape_of_a_real_revision(skeleton: Project) -> None:
    revision_path, test_path = skeleton.files
    assert revision_path.parent == skeleton.root / "versions"
    assert test_path.parent == skeleton.root / "tests"
    source = revision_path.read_text()
    assert not skeleton.follow_up.startswith("ghostsync_"), "a host's follow-up never takes ghostsync's ids"
    assert len(skeleton.follow_up) <= 32
    assert f"Revision ID: {skeleton.follow_up}\nRevises: {HEAD}\nCreate Date: " in source
    assert "from ghostsync.migrations import kit\n" in source and "import ghostsync.migrations.versions" not in source

    module = load(revision_path)
    at_head = chain.declared_at(HEAD, SCRIPT)
    assert (module.revision, module.down_revision) == (skeleton.follow_up, HEAD)
    previous_functions = {v.signature: v for k, v in vars(module).items()
                          if k.startswith("PREVIOUS_") and isinstance(v, Function)}
    previous_triggers = {v.name: v for k, v in vars(module).items()
                         if k.startswith("PREVIOUS_") and isinstance(v, Trigger)}
    assert previous_functions == at_head.functions, "the head's function texts, verbatim"
    assert previous_triggers == at_head.triggers, "the head's trigger definitions, verbatim"
    assert {f.signature: f for f in module.DECLARES.functions} == at_head.functions, "copies to edit"
    assert {t.name: t for t in module.DECLARES.triggers} == at_head.triggers
    assert module.COLUMNS == () and module.DECLARES.columns == ()
    # downgrade restores each previous text under the revision that declared it
    for key, by in at_head.declared_by.items():
        if key in at_head.functions or key in at_head.triggers:
            assert f'PREVIOUS_{generator.constant_names(at_head.functions.values(), at_head.triggers.values())[key]},' \
                   f' "{by}")' in source, key
    # functions first, then ONE lock step for the triggers (and columns), last
    upgrade = source[source.index("def upgrade()"):source.index("def downgrade()")]
    assert upgrade.index("kit.install_function") < upgrade.index("kit.step(")
    assert upgrade.count("kit.step(") == 1 and "kit.backfill" not in source


def test_the_unedited_skeleton_passes_lint(skeleton: Project, tmp_path: Path) -> None:
    lint(skeleton.files, skeleton.ini, tmp_path)


def test_the_unedited_skeleton_passes_its_own_tests(skeleton: Project, supabase_pg_major: int) -> None:
    run_generated_tests(skeleton, supabase_pg_major)


def test_the_filled_in_follow_up_and_its_data_revision_pass_lint(project: Project, tmp_path: Path) -> None:
    lint(project.files, project.ini, tmp_path)
    follow_up, data = load(project.files[0]), load(project.files[2])
    assert [c.name for c in follow_up.DECLARES.columns] == ["display_name"]
    assert {f.signature for f in follow_up.DECLARES.functions} == {"ghostsync.handle_new_user()",
                                                                   "ghostsync.handle_user_updated()",
                                                                   "ghostsync.write_profile(uuid,boolean)"}
    assert [t.name for t in follow_up.DECLARES.triggers] == ["zz_ghostsync_on_auth_user_updated"]
    assert data.down_revision == project.follow_up and data.DECLARES.jobs == (DATA_JOB,)
    assert "display_name" in data.BATCH and "display_name" in data.OFFLINE_TEMPLATE
    assert "ALTER TABLE" not in data.OFFLINE_TEMPLATE and "kit.step" not in project.files[2].read_text()


def test_the_filled_in_revisions_pass_their_own_tests(project: Project, supabase_pg_major: int) -> None:
    run_generated_tests(project, supabase_pg_major)


# -- where revisions go ----------------------------------------------------------------------------

def test_in_ghostsyncs_own_repository_the_follow_up_is_the_next_ghostsync_revision(tmp_path: Path) -> None:
    """A copy of the checkout: the packaged configuration, nothing else; the revision joins the chain."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "ghostsync", repo / "ghostsync", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    env = {"PYTHONPATH": str(repo)}
    proc = cli("revision", "-m", "Profiles carry display_name", cwd=repo, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    revision_path, test_path = (Path(line) for line in proc.stdout.split())
    number = max(int(m.group(1)) for r in chain.branch_revisions(SCRIPT) if (m := generator.OWN_ID.match(r))) + 1
    expected_id = f"ghostsync_{number:04d}"
    versions = repo / "ghostsync" / "migrations" / "versions"
    assert revision_path == versions / f"{number:04d}_profiles_carry_display_name.py"
    assert test_path == repo / "tests" / f"test_revision_{number:04d}_profiles_carry_display_name.py"
    assert revision_of(revision_path) == expected_id
    assert f'down_revision = "{HEAD}"' in revision_path.read_text()
    # the copy's chain now ends in it, and a second follow-up comes after it
    check = subprocess.run([sys.executable, "-c", "from ghostsync import chain; "
                            "print(chain.__file__, chain.head(chain.script_directory()))"],
                           env=dict(os.environ, PYTHONPATH=str(repo)), cwd=repo, capture_output=True, text=True)
    assert check.stdout.split() == [str(repo / "ghostsync" / "chain.py"), expected_id], check.stderr
    proc = cli("revision", "-m", "and then", cwd=repo, env=env)
    assert proc.returncode == 0 and revision_of(Path(proc.stdout.split()[0])) == f"ghostsync_{number + 1:04d}"
    ruff = subprocess.run([tool("ruff") or "ruff", "check", "--config", str(repo / "pyproject.toml"),
                           str(revision_path), str(test_path)], capture_output=True, text=True, cwd=repo)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    assert "ALEMBIC_INI = chain.DEFAULT_INI" in test_path.read_text()
    # and its test passes there, before anyone edits the revision (the second one removed first)
    Path(proc.stdout.split()[0]).unlink()
    Path(proc.stdout.split()[1]).unlink()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--supabase-pg-versions=17",
                          "--rootdir", str(repo), str(test_path)], cwd=repo, capture_output=True, text=True,
                         timeout=900, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]


# -- the generated test in a host made by `alembic init` ---------------------------------------------

@pytest.mark.parametrize("reads", ["ini", "DATABASE_URL", "elsewhere"])
def test_the_generated_test_runs_on_the_throwaway_database_only(tmp_path: Path, pg: SupabaseServer,
                                                                reads: str) -> None:
    """The host's ini names a canary database (the team's real one). With Alembic's stock env.py
    (sqlalchemy.url) and with the README's (DATABASE_URL, which the shell does not set: the offline test
    needs it too) the generated tests pass on the throwaway database; with an env.py that reads its URL
    from anywhere else they fail with one line each, before anything runs on the canary."""
    with supabase_database(pg) as canary:
        root = tmp_path / "host"
        ini = alembic_init_host(root, canary.url(), reads=reads)
        proc = cli("--alembic-config", str(ini), "revision", "-m", "Nothing changes yet", cwd=root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run = run_pytest(root, pg.major, "tests", env={ELSEWHERE: canary.url()} if reads == "elsewhere" else {})
        output = run.stdout[-6000:] + run.stderr[-3000:]
        untouched(canary)
        if reads == "elsewhere":
            assert run.returncode == 1 and "2 failed, 1 passed" in run.stdout, output
            refusals = [line for line in run.stdout.splitlines() if "refused a connection to" in line]
            assert len(refusals) >= 2 and all(f"refused a connection to {canary.name} on " in line
                                              for line in refusals), output
        else:
            assert run.returncode == 0 and "3 passed" in run.stdout, output
        # ghostsync is a third-party package there: isort's order with ruff's defaults
        ruff = subprocess.run([tool("ruff") or "ruff", "check", "--isolated", "--select", "E,F,W,I", "--line-length",
                               "120", *proc.stdout.split()], capture_output=True, text=True, cwd=root)
        assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_refusals_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    # into an installed package's folder (what Alembic's own `revision` would do in a host)
    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "app_versions"
    ini = write_project_ini(tmp_path / "host", str(installed))
    installed.mkdir(parents=True)
    line = one_line(cli("--alembic-config", str(ini), "revision", "-m", "x", "--version-path", str(installed)))
    assert line.startswith("ghostsync: refusing to write into") and "site-packages" in line
    # into a folder Alembic would never read
    line = one_line(cli("--alembic-config", str(ini), "revision", "-m", "x", "--version-path", str(tmp_path)))
    assert "is not one of the version_locations" in line
    assert not list(installed.iterdir()) and not list((tmp_path / "host" / "versions").iterdir())
    assert not (tmp_path / "host" / "tests").exists()

    # two heads on ghostsync's branch: merge them first
    two = write_project_ini(tmp_path / "two")
    for name in ("a", "b"):
        (two.parent / "versions" / f"{name}.py").write_text(
            f'revision = "{name}_head"\ndown_revision = "{HEAD}"\nbranch_labels = None\ndepends_on = None\n\n\n'
            "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n")
    line = one_line(cli("--alembic-config", str(two), "revision", "-m", "x"))
    assert "2 heads" in line and "merge" in line


SIDE = """\
from ghostsync.migrations import kit

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None

HANDLE_NEW_USER = kit.Function("ghostsync.handle_new_user()", {text!r})
DECLARES = kit.Declares(functions={functions})


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
"""


def test_a_merge_whose_parents_both_replaced_a_function_must_carry_the_combined_text(tmp_path: Path) -> None:
    ini = write_project_ini(tmp_path / "host")
    versions = ini.parent / "versions"
    base = chain.declared_at(HEAD, SCRIPT).functions["ghostsync.handle_new_user()"].create

    def write(name: str, down: str | tuple[str, ...], text: str, declares: bool) -> None:
        (versions / f"{name}.py").write_text(SIDE.format(revision=name, down=down, text=text,
                                                         functions="(HANDLE_NEW_USER,)" if declares else "()"))

    # only one side replaced it: the merged head is unambiguous
    write("host_side", HEAD, base.replace("BEGIN", "BEGIN -- host", 1), True)
    write("release_side", HEAD, base, False)
    write("merged", ("host_side", "release_side"), base, False)
    assert generator.ambiguous_at_merge(chain.script_directory(ini), "merged") == []
    # both replaced it, differently, and the merge does not say which: refused, one line
    write("release_side", HEAD, base.replace("BEGIN", "BEGIN -- release", 1), True)
    line = one_line(cli("--alembic-config", str(ini), "revision", "-m", "x", cwd=ini.parent))
    assert "the merge merged leaves ghostsync.handle_new_user() ambiguous" in line
    # the merge carries the combined text: the follow-up's previous text is the merge's
    combined = base.replace("BEGIN", "BEGIN -- host -- release", 1)
    write("merged", ("host_side", "release_side"), combined, True)
    proc = cli("--alembic-config", str(ini), "revision", "-m", "after the merge", cwd=ini.parent)
    assert proc.returncode == 0, proc.stderr
    written = load(Path(proc.stdout.split()[0]))
    assert written.down_revision == "merged" and written.PREVIOUS_HANDLE_NEW_USER.create == combined


def test_alembics_own_revision_and_merge_render_ghostsyncs_template(tmp_path: Path) -> None:
    """`ghostsync migrate revision` / `merge` (Alembic's commands on ghostsync's configuration) render
    script.py.mako: a revision in the chain's shape, empty, that passes the repository's ruff rules."""
    from alembic import command
    from alembic.config import Config

    ini = write_project_ini(tmp_path / "project")
    config = Config(str(ini))
    config.attributes["configure_logger"] = False
    first = command.revision(config, "one side", rev_id="side_one", head=HEAD,
                             version_path=str(ini.parent / "versions"))
    command.revision(config, "other side", rev_id="side_two", head=HEAD, splice=True,
                     version_path=str(ini.parent / "versions"))
    merged = command.merge(config, ["side_one", "side_two"], message="merge the sides", rev_id="merged_sides")
    paths = [Path(s.path) for s in (first, merged) if s is not None and not isinstance(s, list)]
    assert len(paths) == 2 and all(p.parent == ini.parent / "versions" for p in paths)
    merge_source = paths[1].read_text()
    assert 'down_revision = ("side_one", "side_two")' in merge_source
    assert "from ghostsync.migrations import kit" in merge_source and "DECLARES = kit.Declares()" in merge_source
    assert chain.head(chain.script_directory(ini)) == "merged_sides"
    assert load(paths[1]).DECLARES == load(paths[0]).DECLARES
    ruff = subprocess.run([tool("ruff") or "ruff", "check", "--config", str(REPO / "pyproject.toml"),
                           *map(str, paths)], capture_output=True, text=True, cwd=REPO)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


# -- the follow-up on a database -------------------------------------------------------------------

def display_names(db: SupabaseDatabase) -> dict[str, str | None]:
    return {str(k): v for k, v in db.sql("SELECT id::text, display_name FROM public.users")}


def codes(found: dict[str, Any], kind: str = "problems") -> list[str]:
    return [f["code"] for f in found[kind]]


def test_repair_backfill_status_and_drift_follow_the_follow_up(db: SupabaseDatabase, project: Project) -> None:
    db.upgrade(HEAD)
    with db.auth() as auth:
        ann = auth.signup(email="ann@example.com", user_meta={"full_name": "Ann Example"})
        long_named = auth.signup(email="long@example.com", user_meta={"full_name": "Ω" * 300})
        unnamed = auth.signup(phone="+15550002222")

    # The follow-up: the column, the functions, the trigger; existing profiles are stale until the data revision.
    proc = project.migrate(db, "upgrade", project.follow_up)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rc, found = project.status(db)
    assert (rc, found["revision"], found["head"], found["stale_profiles"]) == (1, project.follow_up, project.data, 2)
    assert codes(found) == ["stale_profiles"] and "display_name" in found["problems"][0]["message"]
    assert codes(found, "warnings") == ["behind_head"]

    # The data revision backfills them, in its own job.
    proc = project.migrate(db, "-x", "batch_size=2", "upgrade", "head")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = display_names(db)
    assert (names[str(ann)], names[str(long_named)], names[str(unnamed)]) == ("Ann Example", "Ω" * 100, None)
    assert db.sql("SELECT status, records_affected FROM public.cleanup_audit_log WHERE job_name = %s",
                  (DATA_JOB,)) == [("succeeded", 2)]
    rc, found = project.status(db)
    assert (rc, found["revision"], found["at_head"], found["stale_profiles"]) == (0, project.data, True, 0), found
    assert found["jobs"][DATA_JOB]["status"] == "succeeded"
    assert found["triggers"]["zz_ghostsync_on_auth_user_updated"]["matches"] is True

    # The sync keeps it: signup, metadata change.
    with db.auth() as auth:
        bo = auth.signup(email="bo@example.com", user_meta={"full_name": "Bo"})
        auth.admin_update_user(bo, user_meta={"full_name": "Bo B."})
    assert display_names(db)[str(bo)] == "Bo B."

    # repair: a failed signup sync is repaired with display_name, as the follow-up declares it.
    db.sql("ALTER TABLE public.users ADD CONSTRAINT app_refuses CHECK (false) NOT VALID")
    with db.auth() as auth:
        cy = auth.signup(email="cy@example.com", user_meta={"full_name": "Cy"})
    db.sql("ALTER TABLE public.users DROP CONSTRAINT app_refuses")
    rc, found = project.status(db)
    assert (rc, found["failed_syncs"], found["ghosts"]) == (1, 1, 1)
    # a stale display name, written behind the sync's back
    db.sql("UPDATE public.users SET display_name = 'someone else' WHERE id = %s", (str(ann),))
    rc, found = project.status(db)
    assert found["stale_profiles"] == 1 and "stale_profiles" in codes(found)
    proc = project.run(db, "repair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = display_names(db)
    assert (names[str(cy)], names[str(ann)]) == ("Cy", "Ann Example")
    rc, found = project.status(db)
    assert (rc, codes(found)) == (0, []), found["problems"]

    # backfill: a ghost made behind the trigger's back (a restore) gets its display name.
    db.sql("SET session_replication_role = replica; "
           "INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, "
           "created_at, updated_at) VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), "
           "'authenticated', 'authenticated', 'dee@example.com', '{}', '{\"full_name\": \"Dee\"}', now(), now()); "
           "SET session_replication_role = origin")
    proc = project.run(db, "backfill")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert db.value("SELECT display_name FROM public.users WHERE email = 'dee@example.com'") == "Dee"

    # A failed run of the follow-up's job is seen by status.
    db.sql("INSERT INTO public.cleanup_audit_log (job_name, status, records_affected, finished_at) "
           "VALUES (%s, 'failed', 0, now())", (DATA_JOB,))
    rc, found = project.status(db)
    assert rc == 0 and "job_failed" in codes(found, "warnings")
    assert any(DATA_JOB in w["message"] for w in found["warnings"])
    db.sql("DELETE FROM public.cleanup_audit_log WHERE job_name = %s AND status = 'failed'", (DATA_JOB,))

    # Drift: a function edited by hand, a trigger replaced by an older definition.
    follow_up = load(project.files[0])
    original = follow_up.HANDLE_NEW_USER.create
    db.sql(follow_up.PREVIOUS_HANDLE_NEW_USER.create, user="postgres")
    rc, found = project.status(db)
    assert rc == 1 and "function_drift" in codes(found)
    assert found["functions"]["ghostsync.handle_new_user()"]["differences"] == ["text"]
    db.sql(original, user="postgres")
    db.sql(follow_up.PREVIOUS_ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED.create)
    rc, found = project.status(db)
    assert rc == 1 and codes(found) == ["trigger_drift"], found["problems"]
    assert found["triggers"]["zz_ghostsync_on_auth_user_updated"]["matches"] is False
    db.sql(follow_up.ZZ_GHOSTSYNC_ON_AUTH_USER_UPDATED.create)
    assert project.status(db)[0] == 0

    # A legitimate downgrade to the previous revision: healthy, behind head, nothing "differs".
    proc = project.migrate(db, "downgrade", HEAD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rc, found = project.status(db)
    assert (rc, found["revision"], found["healthy"]) == (0, HEAD, True), found["problems"]
    assert codes(found) == [] and codes(found, "warnings") == ["behind_head"]
    assert all(t["matches"] for t in found["triggers"].values())
    assert all(f["state"] == "matches" for f in found["functions"].values())
    text = project.run(db, "status")
    assert text.returncode == 0 and "differs" not in text.stdout.lower() and "edited by hand" not in text.stdout
    assert display_names(db)[str(ann)] == "Ann Example", "the column and its values stay"

    # Up again: what changed meanwhile is backfilled by the job's second run.
    with db.auth() as auth:
        auth.admin_update_user(ann, user_meta={"full_name": "Ann E."})
    assert display_names(db)[str(ann)] == "Ann Example", "not synced while downgraded"
    proc = project.migrate(db, "upgrade", "head")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert display_names(db)[str(ann)] == "Ann E."
    assert project.status(db)[0] == 0


def test_adopting_a_too_short_display_name_refuses_before_changing_anything(db: SupabaseDatabase,
                                                                            project: Project) -> None:
    db.upgrade(HEAD)
    db.sql("ALTER TABLE public.users ADD COLUMN display_name varchar(20)", user="postgres")
    functions = db.sql("SELECT p.proname::text, p.prosrc FROM pg_proc AS p "
                       "WHERE p.pronamespace = 'ghostsync'::regnamespace ORDER BY 1")
    triggers = db.sql("SELECT tgname::text, pg_get_triggerdef(oid) FROM pg_trigger "
                      "WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal ORDER BY 1")
    proc = project.migrate(db, "upgrade", "head")
    assert proc.returncode == 2
    failed = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ghostsync: ")]
    assert len(failed) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "existing column public.users.display_name is character varying(20)" in failed[0]
    assert "nothing was changed" in failed[0]
    assert db.value("SELECT version_num FROM public.alembic_version") == HEAD
    assert db.sql("SELECT p.proname::text, p.prosrc FROM pg_proc AS p "
                  "WHERE p.pronamespace = 'ghostsync'::regnamespace ORDER BY 1") == functions
    assert db.sql("SELECT tgname::text, pg_get_triggerdef(oid) FROM pg_trigger "
                  "WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal ORDER BY 1") == triggers
    assert db.value("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'public.users'::regclass AND attname = 'display_name'") == "character varying(20)"
    with db.auth() as auth:
        auth.signup(email="still@example.com", user_meta={"full_name": "A name longer than twenty characters"})
    assert db.value("SELECT count(*) FROM ghostsync.sync_failures") == 0
    # widened as the line says, the upgrade goes through and fills it
    db.sql("ALTER TABLE public.users ALTER COLUMN display_name TYPE text", user="postgres")
    proc = project.migrate(db, "upgrade", "head")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert db.value("SELECT display_name FROM public.users WHERE email = 'still@example.com'") == \
        "A name longer than twenty characters"


def test_export_and_offline_sql_carry_the_follow_up_and_keep_ddl_and_backfill_apart(
        db: SupabaseDatabase, project: Project, tmp_path: Path) -> None:
    # --sql: the follow-up's DDL and its backfill are in separate transactions.
    proc = project.migrate(db, "upgrade", f"{HEAD}:head", "--sql")
    assert proc.returncode == 0, proc.stderr
    transactions = [t for t in proc.stdout.split("COMMIT;") if "version_num" in t]
    assert len(transactions) == 2
    ddl, job = transactions
    assert "ADD COLUMN display_name text" in ddl
    assert "CREATE CONSTRAINT TRIGGER zz_ghostsync_on_auth_user_updated" in ddl
    assert "cleanup_audit_log" not in ddl and f"'{DATA_JOB}'" in job
    assert "ALTER TABLE" not in job and "TRIGGER" not in job
    assert "$ghostsync_step$" in ddl, "the lock step retries offline too"

    # export-supabase: one file per revision, the follow-ups last; applied as the Supabase CLI would.
    out = tmp_path / "supabase" / "migrations"
    proc = project.run(db, "export-supabase", str(out))
    assert proc.returncode == 0, proc.stderr
    files = sorted(p for p in out.iterdir() if re.match(r"^\d{14}_ghostsync_.+\.sql$", p.name))
    chain_length = len(chain.branch_revisions(chain.script_directory(project.ini)))
    assert len(files) == chain_length == len(chain.branch_revisions(SCRIPT)) + 2
    assert files[-2].read_text().startswith(f"-- ghostsync {project.follow_up}: ")
    assert files[-1].read_text().startswith(f"-- ghostsync {project.data}: ")
    with db.auth() as auth:
        before = auth.signup(email="early@example.com", user_meta={"full_name": "Early"})
    for path in files:
        applied = db.psql("BEGIN;\n" + path.read_text() + "\nCOMMIT;\n")
        assert applied.returncode == 0, f"{path.name}: {applied.stderr}"
    assert display_names(db)[str(before)] == "Early"
    rc, found = project.status(db)
    assert (rc, found["revision"], found["at_head"]) == (0, project.data, True), found["problems"]


# -- the workbench (make db / make db-stop) ----------------------------------------------------------

def _start_workbench(state: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ghostsync.testing.workbench", "start", "--pg", "17"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, GHOSTSYNC_WORKBENCH_STATE=str(state)), start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"DATABASE_URL=(\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("the workbench printed no URL:\n" + "".join(seen))


def _reachable(url: str) -> bool:
    match = re.search(r"@([\d.]+):(\d+)/", url)
    assert match
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((match.group(1), int(match.group(2)))) == 0


def test_make_db_runs_until_ctrl_c_and_db_stop_removes_what_a_kill_left(tmp_path: Path) -> None:
    import psycopg2

    if generator.installed_location(REPO):
        pytest.fail("the checkout is inside site-packages")
    state = tmp_path / "workbench.json"
    proc, url = _start_workbench(state)
    try:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('auth.users') IS NOT NULL, current_user")
            assert cur.fetchone() == (True, "postgres")
        recorded = json.loads(state.read_text())
        assert recorded["url"] == url and Path(recorded["root"]).is_dir()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _reachable(url) and not state.exists() and not Path(recorded["root"]).exists()

    # killed: the server outlives it until `make db-stop`
    proc, url = _start_workbench(state)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _reachable(url) and state.exists()
    root = Path(json.loads(state.read_text())["root"])
    stop = subprocess.run([sys.executable, "-m", "ghostsync.testing.workbench", "stop"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, GHOSTSYNC_WORKBENCH_STATE=str(state)))
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not _reachable(url) and not state.exists() and not root.exists()
    again = subprocess.run([sys.executable, "-m", "ghostsync.testing.workbench", "stop"], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, GHOSTSYNC_WORKBENCH_STATE=str(state)))
    assert again.returncode == 0 and "no workbench" in again.stdout


def test_the_makefile_wires_the_workbench() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^db: .*\n\t\$\(PY\) -m ghostsync\.testing\.workbench start", makefile, re.MULTILINE)
    assert re.search(r"^db-stop:.*\n\t\$\(PY\) -m ghostsync\.testing\.workbench stop", makefile, re.MULTILINE)


def test_the_workbench_prints_the_commands_of_its_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkout's make targets and .venv/bin; from a pip install (site-packages) ghostsync's own commands
    and the workbench's module (docs/FOLLOW-UP-REVISIONS.md, 'from a pip install')."""
    from ghostsync.testing import workbench

    assert workbench.hints() == {"then": ".venv/bin/ghostsync migrate upgrade head && .venv/bin/ghostsync status",
                                 "stop": "make db-stop"}
    monkeypatch.setattr(generator, "installed_location", lambda path: True)
    pip = workbench.hints()
    assert pip["stop"] == "python -m ghostsync.testing.workbench stop"
    assert "make" not in " ".join(pip.values()) and ".venv" not in " ".join(pip.values())
    guide = (REPO / "docs" / "FOLLOW-UP-REVISIONS.md").read_text()
    assert "python -m ghostsync.testing.workbench start --pg 17" in guide and pip["stop"] in guide
