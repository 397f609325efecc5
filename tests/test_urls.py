"""Supabase's postgres:// and postgresql:// URLs run on psycopg2; bad URLs get one clear line."""

from __future__ import annotations

import pytest

from ghostsync.urls import BadDatabaseURL, libpq_dsn, normalize, redact


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://postgres:pw@db.example.supabase.co:5432/postgres",
         "postgresql+psycopg2://postgres:pw@db.example.supabase.co:5432/postgres"),
        ("postgresql://postgres.ref:pw@aws-0-eu.pooler.supabase.com:6543/postgres",
         "postgresql+psycopg2://postgres.ref:pw@aws-0-eu.pooler.supabase.com:6543/postgres"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
    ],
)
def test_supabase_urls_use_psycopg2(given, expected):
    assert normalize(given) == expected


@pytest.mark.parametrize(
    ("given", "fragment"),
    [("", "no database URL"), ("mysql://u@h/d", "not a PostgreSQL URL"), ("just-a-host", "not a database URL")],
)
def test_bad_urls_raise_one_line(given, fragment):
    with pytest.raises(BadDatabaseURL) as info:
        normalize(given)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_password_never_in_messages():
    assert "secret" not in redact("postgres://u:secret@h/d")
    with pytest.raises(BadDatabaseURL) as info:
        normalize("mysql://u:secret@h/d")
    assert "secret" not in str(info.value)


def test_libpq_dsn_has_no_driver():
    assert libpq_dsn("postgres://u@h:5/d") == "postgresql://u@h:5/d"


def test_bad_url_in_alembic_is_one_line(db):
    proc = db.alembic_cli("upgrade", "head", url="mysql://u:secret@h/d")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "FAILED: not a PostgreSQL URL" in out
    assert "secret" not in out and "Traceback" not in out
