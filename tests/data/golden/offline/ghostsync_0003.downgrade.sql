BEGIN;

-- Running downgrade ghostsync_0003 -> ghostsync_0002

UPDATE alembic_version SET version_num='ghostsync_0002' WHERE alembic_version.version_num = 'ghostsync_0003';

COMMIT;

