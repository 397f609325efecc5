"""Frozen history stands on its own: the kit and the revisions load nothing of the runtime.

The model is Airflow's ADR 0003 (migration scripts do not import live models): a revision reaches
the package only through ``ghostsync.migrations`` (the kit, the declarations, the settings it reads,
the job runner), so no change to the runtime (``ghostsync.backfill``, ``status``, ``sync``, ...) can
change what an old revision does. The runtime may import from ``ghostsync.migrations``, never the
other way round; ``env.py`` / ``environment.py`` may use the runtime.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from ghostsync import chain

MIGRATIONS = Path(chain.__file__).parent / "migrations"
# What a revision's process may load of ghostsync besides ghostsync.migrations.*: the package itself.
ALLOWED = {"ghostsync"}
# The only modules of the migrations package that may use the runtime: Alembic's env.py and its body.
ENVIRONMENT = {"ghostsync.migrations.env", "ghostsync.migrations.environment"}

LOAD = """
import importlib, json, pathlib, sys
import ghostsync.migrations.kit
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.py")):
    if path.stem != "__init__":
        importlib.import_module("ghostsync.migrations.versions." + path.stem)
print(json.dumps(sorted(m for m in sys.modules if m == "ghostsync" or m.startswith("ghostsync."))))
"""


def test_kit_and_revisions_load_only_the_migrations_package() -> None:
    """In a fresh interpreter: import the kit and every revision, then read ``sys.modules``."""
    proc = subprocess.run([sys.executable, "-c", LOAD, str(MIGRATIONS / "versions")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "ghostsync.migrations.versions.0003_backfill_ghost_users" in loaded, "every revision was imported"
    outside = sorted(m for m in loaded - ALLOWED if not m.startswith("ghostsync.migrations"))
    assert not outside, f"the kit and the revisions load runtime modules: {outside}"


def test_the_migrations_package_imports_no_runtime_module() -> None:
    """Statically too, for every module of ``ghostsync/migrations`` but env.py and environment.py."""
    for path in sorted(MIGRATIONS.rglob("*.py")):
        module = "ghostsync." + ".".join(path.relative_to(MIGRATIONS.parent).with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module.removesuffix(".__init__")
        if module in ENVIRONMENT:
            continue
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.update({node.module} | {f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        runtime = sorted(name for name in imported if name.split(".")[0] == "ghostsync"
                         and not name.startswith("ghostsync.migrations"))
        # ``from ghostsync import x`` names a runtime module x (the package itself is not imported for it)
        assert not [n for n in runtime if n != "ghostsync"], f"{module} imports {runtime}"


def test_revisions_reach_the_package_only_through_the_migrations_package() -> None:
    for rev in chain.branch_revisions(chain.script_directory()).values():
        tree = ast.parse(Path(rev.path).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        assert all(name in {"__future__", "ghostsync.migrations"} for name in imported), (rev.revision, imported)


def test_the_kit_contract_holds_only_what_revisions_use() -> None:
    """Every name in ``kit.__all__`` is used by a revision of the chain, by the revisions ``ghostsync
    revision`` writes, or (``drop_function``, the undo of ``install_function``) by a host's own
    revision that installs a function; and revisions use nothing of the kit outside ``__all__``.
    A contract name can never go after the first release, so none is kept for no user."""
    from ghostsync.migrations import kit

    used: set[str] = {"drop_function"}
    sources = [Path(rev.path).read_text() for rev in chain.branch_revisions(chain.script_directory()).values()]
    sources.append((MIGRATIONS.parent / "generator.py").read_text())
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kit":
                used.add(node.attr)
        used.update(n for n in kit.__all__ if f"kit.{n}" in source)  # names inside generated text
    assert used <= set(kit.__all__), f"revisions use kit names outside its contract: {sorted(used - set(kit.__all__))}"
    unused = sorted(set(kit.__all__) - used)
    assert not unused, f"kit.__all__ names no revision uses: {unused}"
