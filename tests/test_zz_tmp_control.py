import dataclasses
from sqlalchemy import text
import tests.test_backfill_walk as w

def test_unlocked_control(db, monkeypatch):
    orig = w.head_statements
    def patched(d):
        st = orig(d)
        return dataclasses.replace(st, physical=dataclasses.replace(st.physical, has_key=text("SELECT true")))
    monkeypatch.setattr(w, "head_statements", patched)
    w.test_without_a_foreign_key_the_walk_locks_the_ghosts_it_repairs(db)
