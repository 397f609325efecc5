BEGIN;

-- Running downgrade ghostsync_0007 -> ghostsync_0006

DO $ghostsync_step$
DECLARE
  attempt int := 0;
BEGIN
  LOOP
    BEGIN
      PERFORM pg_catalog.set_config('lock_timeout',
        least(greatest(10, 400 / (SELECT 1 + count(*) FROM (SELECT g.t, g.n FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS g(t, n)) AS grants WHERE grants.t <> 'auth.users' AND pg_catalog.to_regclass(grants.t) IS NOT NULL AND grants.n < coalesce((SELECT min(h.n) FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('supautils.drop_trigger_grants', true), '')::jsonb -> current_user::text, '[]'::jsonb)) WITH ORDINALITY AS h(t, n) WHERE h.t = 'auth.users'), 2147483647))), (SELECT s.setting::int / 2 FROM pg_catalog.pg_settings AS s WHERE s.name = 'deadlock_timeout'))::int::text || 'ms', true);
      PERFORM pg_catalog.set_config('statement_timeout', '400ms', true);
      DO $ghostsync_drop$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users') THEN
          BEGIN
            DROP TRIGGER IF EXISTS ghostsync_on_auth_user_updated ON auth.users;
          EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'ghostsync: cannot drop trigger % on %: role % is not its owner (%) and this database '
              'does not let it drop the trigger; hosted Supabase allows it through supautils '
              '(supautils.drop_trigger_grants); here run the downgrade as the owner or a superuser '
              '(DATABASE_URL of supabase_admin); nothing of this revision was applied',
              'ghostsync_on_auth_user_updated', 'auth.users', current_user,
              (SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = 'auth.users'::regclass);
          END;
          DELETE FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_updated' || ' ON ' || 'auth.users';
        ELSIF EXISTS (
          SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_updated' AND NOT tgisinternal
        ) THEN
          RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', 'ghostsync_on_auth_user_updated', 'auth.users';
        END IF;
      END
      $ghostsync_drop$;
      DO $ghostsync_drop$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_deleted' || ' ON ' || 'auth.users') THEN
          BEGIN
            DROP TRIGGER IF EXISTS ghostsync_on_auth_user_deleted ON auth.users;
          EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'ghostsync: cannot drop trigger % on %: role % is not its owner (%) and this database '
              'does not let it drop the trigger; hosted Supabase allows it through supautils '
              '(supautils.drop_trigger_grants); here run the downgrade as the owner or a superuser '
              '(DATABASE_URL of supabase_admin); nothing of this revision was applied',
              'ghostsync_on_auth_user_deleted', 'auth.users', current_user,
              (SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = 'auth.users'::regclass);
          END;
          DELETE FROM ghostsync.objects WHERE kind = 'trigger' AND name = 'ghostsync_on_auth_user_deleted' || ' ON ' || 'auth.users';
        ELSIF EXISTS (
          SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname = 'ghostsync_on_auth_user_deleted' AND NOT tgisinternal
        ) THEN
          RAISE NOTICE 'ghostsync: trigger % on % was not created by ghostsync: left in place', 'ghostsync_on_auth_user_deleted', 'auth.users';
        END IF;
      END
      $ghostsync_drop$;
      DO $ghostsync_guard$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_updated()') THEN
          EXECUTE 'DROP FUNCTION IF EXISTS ' || 'ghostsync.handle_user_updated()';
          DELETE FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_updated()';
        ELSIF pg_catalog.to_regprocedure('ghostsync.handle_user_updated()') IS NOT NULL THEN
          RAISE NOTICE 'ghostsync: function % was not created by ghostsync: left in place', 'ghostsync.handle_user_updated()';
        END IF;
      END
      $ghostsync_guard$;
      DO $ghostsync_guard$
      BEGIN
        IF EXISTS (SELECT 1 FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_deleted()') THEN
          EXECUTE 'DROP FUNCTION IF EXISTS ' || 'ghostsync.handle_user_deleted()';
          DELETE FROM ghostsync.objects WHERE kind = 'function' AND name = 'ghostsync.handle_user_deleted()';
        ELSIF pg_catalog.to_regprocedure('ghostsync.handle_user_deleted()') IS NOT NULL THEN
          RAISE NOTICE 'ghostsync: function % was not created by ghostsync: left in place', 'ghostsync.handle_user_deleted()';
        END IF;
      END
      $ghostsync_guard$;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempt := attempt + 1;
      IF attempt > 20 THEN
        RAISE EXCEPTION 'ghostsync: gave up on %: its locks were not free within 400 ms in % attempts '
          '(a long transaction holds them); nothing of this revision was applied. Retry later, or raise '
          '-x lock_timeout / -x lock_retries', 'drop trigger(s) ghostsync_on_auth_user_updated, ghostsync_on_auth_user_deleted on auth.users and function(s) ghostsync.handle_user_updated(), ghostsync.handle_user_deleted()', attempt;
      END IF;
      PERFORM pg_catalog.pg_sleep(least(2.0, 0.1 * 2 ^ (attempt - 1)));
    END;
  END LOOP;
END
$ghostsync_step$;

UPDATE alembic_version SET version_num='ghostsync_0006' WHERE alembic_version.version_num = 'ghostsync_0007';

COMMIT;

