"""The catalogue of findings (ghostsync/findings.py) is the one home of every code, and everything that shows
findings renders it: status (Python), verify-sql and the pgTAP file (SQL), the Prometheus textfile, the alert
rules in monitoring/ and docs/OPERATIONS.md."""

from __future__ import annotations

import ast
import dataclasses
import re
import string
from pathlib import Path

import pytest

from ghostsync import drift, findings, health, pgtap, report, verify
from ghostsync.drift import TableState
from ghostsync.status import Status

PACKAGE = Path(findings.__file__).parent
REPO = PACKAGE.parent
# JSON keys that share their name with a code (the figure ``ghosts`` and the code ``ghosts``): a key is no code.
FIGURES = {f.name for cls in (Status, TableState, health.Counts) for f in dataclasses.fields(cls)}


def _named(code: str, text: str) -> bool:
    """Whether ``text`` (a string constant of the package, docstrings included) names ``code`` as a code."""
    if code not in FIGURES:
        return re.search(rf"(?<!\w){code}(?!\w)", text) is not None
    # a figure's name is its JSON key too: only quoted as a code counts, not read (->> 'ghosts') or built ('x', v)
    for match in re.finditer(rf"'{code}'|\"{code}\"|\[{code}\]", text):
        before, after = text[:match.start()].rstrip(), text[match.end():].lstrip()
        if not (before.endswith("->>") or after.startswith(",")):
            return True
    return False


def _occurrences() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path == Path(findings.__file__) or path.suffix not in (".py", ".mako", ".sql"):
            continue
        if path.suffix == ".py":
            constants = [n.value for n in ast.walk(ast.parse(path.read_text()))
                         if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        else:
            constants = [path.read_text()]
        for code in findings.CODES:
            if any(_named(code, c) for c in constants):
                found.setdefault(code, set()).add(str(path.relative_to(REPO)))
    return found


def test_each_code_lives_in_the_catalogue_alone():
    assert _occurrences() == {}


def test_the_scan_sees_a_code_written_elsewhere():
    """The one-home test can fail: a module that writes a code string is caught."""
    assert _named("trigger_missing", "trigger_missing")
    assert _named("behind_head", "a warning such as behind_head leaves it healthy")
    assert _named("ghosts", "UNION ALL SELECT 'ghosts' AS code")
    assert not _named("ghosts", "(c.c ->> 'ghosts')::bigint")
    assert not _named("ghosts", "ghosts")
    assert _named("job_failed", "warning [job_failed]: the last run")


def test_codes_are_unique_and_ranked_in_report_order():
    assert len({c.code for c in findings.FINDINGS}) == len(findings.FINDINGS)
    assert [c.rank for c in findings.FINDINGS] == sorted(c.rank for c in findings.FINDINGS)
    assert {c.severity for c in findings.FINDINGS} <= {findings.PROBLEM, findings.WARNING, findings.BY_TABLE}


def test_prometheus_exports_the_catalogues_codes():
    assert report.PROBLEM_CODES == findings.PROBLEM_CODES and report.WARNING_CODES == findings.WARNING_CODES
    assert set(findings.PROBLEM_CODES) | set(findings.WARNING_CODES) == {c.code for c in findings.FINDINGS} | {
        findings.NOT_INSTALLED.code}
    assert set(report.FULL_ONLY_CODES) == {"ghosts", "orphans", "stale_profiles", "app_rows_kept"}


def test_the_scripts_render_every_finding_from_the_catalogue():
    script = verify.script()
    # status alone can tell a foreign row (it knows the configuration's chain): no such case in the script
    for code in (*findings.FINDINGS, *(e for e in findings.ERRORS if e is not findings.REVISION_FOREIGN)):
        assert code.sql_code in script, code.code
        longest = max((lit for lit, *_ in string.Formatter().parse(code.template)), key=len)
        assert longest.replace("'", "''").replace("%", "%%") in script, code.code
    assert drift.attribute_differences_sql("p", "x.f -> 3") in pgtap.script(), "pgTAP compares the attributes"


def _values(code: findings.Code) -> dict[str, str]:
    return {field: f"<{field} 5% 'q'>" for field in code.fields}


@pytest.mark.parametrize("code", [*findings.FINDINGS, *findings.ERRORS], ids=lambda c: c.template[:30])
def test_sql_and_python_word_each_message_alike(db, code):
    values = _values(code)
    sql = code.sql_message(**{k: "'" + v.replace("'", "''") + "'" for k, v in values.items()})
    assert db.value(f"SELECT {sql}") == code.message(**values)
    if code.severity == findings.BY_TABLE:
        for table in (findings.APP_TABLE, "public.cleanup_audit_log"):
            for adopted in (False, True):
                literal, flag = f"'{table}'", str(adopted).lower()
                assert db.value(f"SELECT {code.sql_severity(literal, flag)}") == code.severity_for(table, adopted)
                assert db.value(f"SELECT {code.sql_whose(literal, flag)}") == code.whose_for(table, adopted)
        assert code.severity_for("public.cleanup_audit_log") == findings.PROBLEM


def _rule_codes() -> tuple[set[str], str]:
    rules = (REPO / "monitoring" / "ghostsync.rules.yml").read_text()
    named: set[str] = set()
    for match in re.finditer(r'ghostsync_(?:problem|warning)\{[^}]*code=~?"([^"]+)"', rules):
        named |= set(match.group(1).split("|"))
    return named, rules


def test_the_alert_rules_name_catalogue_codes_and_page_for_every_problem():
    named, rules = _rule_codes()
    assert named <= set(findings.CODES), named - set(findings.CODES)
    # ghosts and failed syncs alert on their own gauges (ghostsync_ghosts, ghostsync_failed_syncs)
    assert "ghostsync_ghosts > 0" in rules and "ghostsync_failed_syncs > 0" in rules
    assert set(findings.PROBLEM_CODES) - {"ghosts", "failed_syncs"} <= named


def test_operations_guide_lists_every_code_with_its_severity():
    guide = (REPO / "docs" / "OPERATIONS.md").read_text()
    for code in findings.FINDINGS:
        row = re.search(rf"^\| `{code.code}` \| ([^|]+) \|", guide, re.MULTILINE)
        assert row is not None, code.code
        expected = {"problem": "problem", "warning": "warning", "by_table": "warning on public.users and adopted "
                    "tables, problem on the tables ghostsync created"}[code.severity]
        assert row.group(1).strip() == expected, code.code
