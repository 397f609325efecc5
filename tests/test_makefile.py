"""Each README command passes on its own from a fresh clone (issue 19, section 8).

CI runs ``make lint`` before ``make test``, which hid that ``make test`` alone
never installed the lint tools tests/test_generator.py runs on the revisions
it writes. Here ``make -n`` says what each target would install on a clone
with no ``.venv``: ``make test``'s install step brings every tool the suite
runs, and ``make dist`` installs ``build`` only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.paths import REPO
from tests.test_generator import LINT_TOOLS

# the PyPI package of each tool tests/test_generator.py's lint() runs
TOOL_PACKAGES = {"ruff": "ruff", "mypy": "mypy", "squawk": "squawk-cli"}


def planned(target: str, tmp_path: Path) -> list[str]:
    """The commands ``make TARGET`` would run on a fresh clone (no .venv), as ``make -n`` prints them."""
    clone = tmp_path / f"clone_{target}"
    clone.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, clone / name)
    proc = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=clone, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def installed_extras(commands: list[str]) -> list[str]:
    """The extras of ghostsync that ``pip install -e '.[...]'`` lines install."""
    found = []
    for line in commands:
        for match in re.finditer(r"pip install .*-e '?\.\[([^\]]*)\]", line):
            found.extend(e.strip() for e in match.group(1).split(","))
    return found


def optional_dependencies() -> dict[str, list[str]]:
    """pyproject.toml's [project.optional-dependencies], read plainly (tomllib is not in Python 3.10)."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return {name: re.findall(r'^\s*"([^"]+)"', body, re.MULTILINE)
            for name, body in re.findall(r"^(\w+) = \[(.*?)\]$", block, re.MULTILINE | re.DOTALL)}


def requirements_of(extras: list[str]) -> set[str]:
    """Every package name those extras bring, following ghostsync[...] references."""
    optional = optional_dependencies()
    names: set[str] = set()
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            match = re.match(r"([A-Za-z0-9._-]+)(?:\[([^\]]*)\])?", line)
            assert match, line
            if match.group(1) == "ghostsync":
                todo.extend(e.strip() for e in (match.group(2) or "").split(","))
            else:
                names.add(match.group(1).lower())
    return names


def test_make_tests_own_install_step_brings_every_tool_the_suite_runs(tmp_path: Path) -> None:
    commands = planned("venv", tmp_path)  # the install step of `make test` (test: servers: venv)
    extras = installed_extras(commands)
    assert extras, commands
    brought = requirements_of(extras)
    missing = [TOOL_PACKAGES[tool] for tool in LINT_TOOLS if TOOL_PACKAGES[tool] not in brought]
    assert not missing, f"`make test` alone would not install {missing} (it installs ghostsync{extras})"
    test_plan = planned("test", tmp_path)
    assert any("-e '.[test]'" in line for line in test_plan), test_plan


def test_make_dist_installs_build_only(tmp_path: Path) -> None:
    commands = planned("dist", tmp_path)
    installs = [line for line in commands if "pip install" in line]
    assert installed_extras(commands) == [], commands
    assert installs and all(line.split("pip install", 1)[1].split()[-1] == "build" for line in installs), installs
    assert any(re.search(r"-m build --outdir dist \.$", line) for line in commands), commands
