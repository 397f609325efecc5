"""Signup forms: where head's extra server CPU per signup goes, form by form, against the report's minimal trigger.

The same signups as the ``signups`` measurement (the harness's mix: three in
ten autoconfirmed, whose confirmation fires the update sync), on clones of
head whose sync functions are replaced, one change at a time, by other forms
(installed as ``postgres`` on the clone; nothing else differs):

- ``head``: the functions as the head revision installs them (a plain INSERT in
  the exception block, a profile already there taken for success; the check for
  deferred constraints read with the insert and remembered for the transaction);
- ``prior``: ghostsync_0008's functions as they were before issue 14 (each
  signup ``INSERT ... ON CONFLICT DO NOTHING`` in an exception block, then a
  FOR loop over pg_constraint looking for deferred constraints; the update sync
  likewise, its own loop again);
- ``on_conflict``: head's signup sync with ``ON CONFLICT (id) DO NOTHING`` back
  (what the plain INSERT saves);
- ``lock_first``: head's signup sync with the account locked FOR KEY SHARE by the
  signup's own transaction before the block (so the foreign key's lock is not the
  subtransaction's, and the signup's later UPDATEs of the account need no
  MultiXact; not adopted: an error outside the block would fail the signup);
- ``minimal_function``: head's triggers, the report's function as the signup sync
  (what head's other triggers cost a signup: nothing measurable);
- ``no_block``: head's signup function without its exception block (not safe:
  any profile error fails the signup; it shows what the subtransaction costs);
- ``no_update_sync``: head with the update sync a no-op (not a ghostsync form:
  the profile would go stale on confirmation; it shows what keeping
  email_verified current costs the autoconfirmed signups).

Each figure is that database's signups per server CPU second over the
minimal trigger's, per round, slices side by side; the A/A control is a second
copy of ``minimal``. Then, with less noise, the same forms on the server alone:
a procedure inserting 500 accounts as the auth service's first statements do
(INSERT, the role UPDATE, with or without the confirmation UPDATE), committing
each, timed in the backend's CPU (``loop_*`` figures: microseconds per signup
over minimal's; above 1 costs more). Context only: the target is the
``signups`` figure.
"""

from __future__ import annotations

from typing import Any

from bench import harness, pool
from bench.report import Figure, measurement_result

NAME = "signup_forms"


def _revision_function(revision: str, attribute: str) -> str:
    from ghostsync import chain

    return str(getattr(chain.script_directory().get_revision(revision).module, attribute).create)


def _replace(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"signup_forms: the function text changed, cannot derive a form ({old[:40]!r})")
    return text.replace(old, new)


# ghostsync_0008's functions as they were before issue 14 (commit 51bb0b9).
PRIOR_DEFERRED_LOOP = """
    FOR deferred IN
      SELECT c.conname FROM pg_catalog.pg_constraint AS c
      WHERE c.conrelid = 'public.users'::pg_catalog.regclass AND c.condeferred
    LOOP
      EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I IMMEDIATE', deferred.conname);
      EXECUTE pg_catalog.format('SET CONSTRAINTS public.%I DEFERRED', deferred.conname);
    END LOOP;
"""

PRIOR_NEW_USER = r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_new_user()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
  deferred record;
BEGIN
  BEGIN
    INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
    VALUES (NEW.id, NEW.email, NEW.email_confirmed_at IS NOT NULL, NEW.deleted_at,
            coalesce(NEW.created_at, pg_catalog.now()), coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now()))
    ON CONFLICT (id) DO NOTHING;""" + PRIOR_DEFERRED_LOOP + r"""
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      VALUES (NEW.id, TG_OP, failed_state, failed_message)
      ON CONFLICT (user_id) DO UPDATE
        SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
            last_failed_at = pg_catalog.now(), failures = f.failures + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'ghostsync: profile write for % failed (% %) and could not be recorded: %',
        NEW.id, failed_state, failed_message, SQLERRM;
    END;
  END;
  RETURN NEW;
END
$function$;
"""

PRIOR_USER_UPDATED = r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_user_updated()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $function$
DECLARE
  failed_state text;
  failed_message text;
  deferred record;
BEGIN
  BEGIN
    UPDATE public.users
    SET email = NEW.email, email_verified = NEW.email_confirmed_at IS NOT NULL, deleted_at = NEW.deleted_at,
        updated_at = pg_catalog.now()
    WHERE id = NEW.id;
    IF NOT FOUND THEN
      INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
      VALUES (NEW.id, NEW.email, NEW.email_confirmed_at IS NOT NULL, NEW.deleted_at,
              coalesce(NEW.created_at, pg_catalog.now()), pg_catalog.now())
      ON CONFLICT (id) DO UPDATE
        SET email = EXCLUDED.email, email_verified = EXCLUDED.email_verified, deleted_at = EXCLUDED.deleted_at,
            updated_at = EXCLUDED.updated_at;
    END IF;""" + PRIOR_DEFERRED_LOOP + r"""
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    BEGIN
      INSERT INTO ghostsync.sync_failures AS f (user_id, operation, sqlstate, message)
      VALUES (NEW.id, TG_OP, failed_state, failed_message)
      ON CONFLICT (user_id) DO UPDATE
        SET operation = EXCLUDED.operation, sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message,
            last_failed_at = pg_catalog.now(), failures = f.failures + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'ghostsync: profile update for % failed (% %) and could not be recorded: %',
        NEW.id, failed_state, failed_message, SQLERRM;
    END;
  END;
  RETURN NULL;
END
$function$;
"""

NO_UPDATE_SYNC = r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_user_updated()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $function$ BEGIN RETURN NULL; END $function$;
"""

NO_BLOCK_NEW_USER = r"""
CREATE OR REPLACE FUNCTION ghostsync.handle_new_user()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $function$
BEGIN
  INSERT INTO public.users (id, email, email_verified, deleted_at, created_at, updated_at)
  VALUES (NEW.id, NEW.email, NEW.email_confirmed_at IS NOT NULL, NEW.deleted_at,
          coalesce(NEW.created_at, pg_catalog.now()), coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now()));
  RETURN NEW;
END
$function$;
"""

def _head_function(attribute: str) -> str:
    return _revision_function("ghostsync_0008", attribute)


def _on_conflict_form() -> str:
    """Head's signup sync with the INSERT ... ON CONFLICT (id) DO NOTHING of before (a speculative insertion)."""
    return _replace(_head_function("HANDLE_NEW_USER"),
                    "      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())\n    )\n",
                    "      coalesce(NEW.updated_at, NEW.created_at, pg_catalog.now())\n    )\n"
                    "    ON CONFLICT (id) DO NOTHING\n")


def _lock_first_form() -> str:
    """Head's signup sync with the account locked FOR KEY SHARE by the signup's own transaction, before the block."""
    return _replace(_head_function("HANDLE_NEW_USER"), "BEGIN\n  BEGIN\n",
                    "BEGIN\n  PERFORM FROM auth.users AS a WHERE a.id = NEW.id FOR KEY SHARE;\n  BEGIN\n")


def forms() -> dict[str, tuple[str, ...]]:
    """Each form: the CREATE OR REPLACE statements that turn a clone of head into it."""
    return {
        "head": (),
        "prior": (PRIOR_NEW_USER, PRIOR_USER_UPDATED),
        "on_conflict": (_on_conflict_form(),),
        "lock_first": (_lock_first_form(),),
        "minimal_function": (_revision_function("ghostsync_0002", "HANDLE_NEW_USER"),),
        "no_block": (NO_BLOCK_NEW_USER,),
        "no_update_sync": (NO_UPDATE_SYNC,),
    }


def run(scale: str, *, major: int = 17, say: Any = print, rounds: int = 10, slices: int = 20,
        slice_s: float = 1.0, clients: int = 4, **_: Any) -> dict[str, Any]:
    ws = harness.workspace(scale, major)
    slices = max(slices, rounds)
    variants = forms()
    arms = ["minimal", "control", *variants]
    say(f"== {NAME}: {len(arms)} databases, {clients} client processes each, {slices} rounds of {slice_s:g} s")
    dbs: dict[str, str] = {}
    for arm in arms:
        dbs[arm] = ws.clone("minimal" if arm in ("minimal", "control") else "head", f"w_forms_{arm}")
        for create in variants.get(arm, ()):
            ws.cluster.execute(dbs[arm], create, user=harness.MIGRATING_ROLE)
    pools: dict[str, pool.Pool] = {}
    try:
        for arm in arms:
            pools[arm] = pool.Pool(ws.cluster.url(dbs[arm], harness.AUTH_ROLE), pool.signup, clients=clients)
        found = pool.run_in_turn(pools, rounds=slices, slice_s=slice_s, say=say)
    finally:
        for p in pools.values():
            p.close()
    loop = _server_loop(ws, dbs, rounds, say)
    ws.drop(*dbs.values())
    us = {arm: found.server_us(arm) for arm in arms}
    say("   server CPU per signup: " + ", ".join(f"{arm} {us[arm]:.0f} us" for arm in arms))
    control = found.capacity_ratios("control", "minimal")
    figures = [
        Figure(f"signup_forms.{arm}", NAME, f"signups per server CPU s: {arm} / minimal",
               ratios=found.capacity_ratios(arm, "minimal"), control_ratios=control,
               context={f"{arm} us/signup": us[arm], "minimal us/signup": us["minimal"]},
               note="context: one form of the sync functions on a clone of head")
        for arm in variants
    ]
    for confirm in (False, True):
        kind = "confirmed" if confirm else "unconfirmed"
        for arm in ["control", *variants]:
            mine, base = loop[(arm, confirm)], loop[("minimal", confirm)]
            figures.append(Figure(
                f"signup_forms.loop_{kind}.{arm}", NAME, f"server loop, {kind} signups: {arm} / minimal, us per signup",
                ratios=[a / b for a, b in zip(mine, base, strict=True) if b > 0],
                context={"extra us/signup": _median(mine) - _median(base), "minimal us/signup": _median(base)},
                note="a procedure on the server inserting accounts and committing each (INSERT, the role UPDATE"
                     + (", the confirmation UPDATE" if confirm else "") + "): the backend's CPU time per signup, "
                     "no client; > 1 costs more than the minimal trigger"))
    return measurement_result(NAME, figures, samples=found.as_dict(), server_us=us,
                              server_loop_us={f"{a}/{'confirmed' if c else 'unconfirmed'}": v
                                              for (a, c), v in loop.items()})


# Signups made on the server itself, each its own transaction, as the auth service makes the first
# statements of one: where the per-signup cost of a form shows without a client's noise.
LOOP_PROCEDURE = r"""
CREATE OR REPLACE PROCEDURE public.bench_signups(n int, confirm boolean) LANGUAGE plpgsql AS $$
DECLARE uid uuid;
BEGIN
  FOR i IN 1..n LOOP
    uid := gen_random_uuid();
    INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
                            created_at, updated_at, is_sso_user, is_anonymous)
    VALUES ('00000000-0000-0000-0000-000000000000', uid, 'authenticated', '', 'loop-' || uid || '@example.com',
            '{}', '{}', now(), now(), false, false);
    UPDATE auth.users SET role = 'authenticated', updated_at = now() WHERE id = uid;
    IF confirm THEN
      UPDATE auth.users SET email_confirmed_at = now(), updated_at = now() WHERE id = uid;
    END IF;
    COMMIT;
  END LOOP;
END $$
"""
LOOP_SIGNUPS = 500


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


def _server_loop(ws: harness.Workspace, dbs: dict[str, str], rounds: int,
                 say: Any) -> dict[tuple[str, bool], list[float]]:
    """Per (arm, confirm): microseconds of backend CPU per signup, one value per round."""
    out: dict[tuple[str, bool], list[float]] = {}
    conns = {}
    try:
        for arm, db in dbs.items():
            ws.cluster.execute(db, LOOP_PROCEDURE)
            conn = ws.cluster.connect(db)
            conns[arm] = (conn, harness.backend_pid(conn))
            with conn.cursor() as cur:
                cur.execute("CALL public.bench_signups(50, true)")  # warm
        for confirm in (False, True):
            for order in harness.orders(list(dbs), rounds):
                for arm in order:
                    conn, pid = conns[arm]
                    c0 = harness.cpu_seconds(pid) or 0.0
                    with conn.cursor() as cur:
                        cur.execute("CALL public.bench_signups(%s, %s)", (LOOP_SIGNUPS, confirm))
                    out.setdefault((arm, confirm), []).append(
                        ((harness.cpu_seconds(pid) or 0.0) - c0) / LOOP_SIGNUPS * 1e6)
    finally:
        for conn, _ in conns.values():
            conn.close()
    say("   server loop, us per signup (unconfirmed / confirmed): " + ", ".join(
        f"{arm} {_median(out[(arm, False)]):.1f} / {_median(out[(arm, True)]):.1f}" for arm in dbs))
    return out


if __name__ == "__main__":
    from bench.measurements._common import main

    raise SystemExit(main(run, __doc__))
